//! The demo's container images, built `FROM scratch` from static binaries
//! next to homeostat's own: nothing is pulled, no registry is needed.

use std::collections::HashMap;
use std::path::Path;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use super::DemoError;

/// The version of the demo services' good build; [`BAD_VERSION`] is the
/// build the bad-deploy fault rolls out.
pub const GOOD_VERSION: &str = "1.0.0";
pub const BAD_VERSION: &str = "2.0.0";

/// One image: a static binary copied into `FROM scratch` by `dockerfile`.
pub struct Image {
    pub tag: String,
    /// The binary's file name, next to homeostat's and in the build context.
    pub binary: &'static str,
    pub dockerfile: &'static str,
    pub build_args: Vec<(&'static str, String)>,
}

const SERVICE_A_DOCKERFILE: &str = include_str!("../../../microservices/service_a/Dockerfile");
const SERVICE_B_DOCKERFILE: &str = include_str!("../../../microservices/service_b/Dockerfile");
const HOMEOSTAT_DOCKERFILE: &str = include_str!("../../../deploy/Dockerfile");

/// `homeostat-demo/<service>:<version>`.
pub fn service_tag(service: &str, version: &str) -> String {
    format!("homeostat-demo/{service}:{version}")
}

/// Every image the demo, Compose and the Kubernetes manifests use.
pub fn all() -> Vec<Image> {
    let service = |binary: &'static str, dockerfile: &'static str, version: &str, bad: bool| Image {
        tag: service_tag(binary, version),
        binary,
        dockerfile,
        build_args: vec![("VERSION", version.to_owned()), ("BAD_VERSION", bad.to_string())],
    };
    vec![
        Image {
            tag: format!("homeostat:{}", env!("CARGO_PKG_VERSION")),
            binary: "homeostat",
            dockerfile: HOMEOSTAT_DOCKERFILE,
            build_args: vec![("VERSION", env!("CARGO_PKG_VERSION").to_owned())],
        },
        service("service_a", SERVICE_A_DOCKERFILE, GOOD_VERSION, false),
        service("service_b", SERVICE_B_DOCKERFILE, GOOD_VERSION, false),
        service("service_b", SERVICE_B_DOCKERFILE, BAD_VERSION, true),
    ]
}

/// Builds `image` from the binary in `bin_dir`. Unchanged inputs hit
/// Docker's build cache, so building again is how images are reused.
pub async fn build(docker: &Docker, bin_dir: &Path, image: &Image) -> Result<(), DemoError> {
    let path = bin_dir.join(image.binary);
    let binary = std::fs::read(&path).map_err(|source| DemoError::MissingBinary {
        path: path.clone(),
        source,
    })?;
    let context = context(image, &binary).map_err(|e| DemoError::Image {
        tag: image.tag.clone(),
        message: format!("cannot pack the build context: {e}"),
    })?;
    let args: HashMap<&str, String> = image.build_args.iter().cloned().collect();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&image.tag)
        .buildargs(&args)
        .rm(true)
        .build();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = progress.next().await {
        let failed = match step {
            Ok(info) => info.error_detail.and_then(|d| d.message),
            Err(e) => Some(e.to_string()),
        };
        if let Some(message) = failed {
            return Err(DemoError::Image {
                tag: image.tag.clone(),
                message,
            });
        }
    }
    Ok(())
}

/// A tar archive holding `Dockerfile` and the binary.
fn context(image: &Image, binary: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
    };
    add("Dockerfile", 0o644, image.dockerfile.as_bytes())?;
    add(image.binary, 0o755, binary)?;
    tar.into_inner()
}
