//! The leak fault really grows resident memory, and clearing it gives the memory back. Alone in its
//! own test binary so no other test moves the process's RSS.

mod support;

use std::time::Duration;

use support::{eventually, settings_b, start};

const MIB: f64 = 1024.0 * 1024.0;

#[tokio::test]
async fn leak_grows_and_releases_resident_memory() {
    let b = start(settings_b()).await;
    let rss = "process_resident_memory_bytes";
    let before = b.metric(rss).await.unwrap();

    let (status, state) = b.inject("leak", r#"{"rate_mib_per_second": 64}"#).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["active"][0]["rate_mib_per_second"], 64.0);
    assert_eq!(b.metric(r#"service_fault_active{fault="leak"}"#).await, Some(1.0));
    let grown = eventually("RSS to grow by 48 MiB", Duration::from_secs(20), || async {
        let now = b.metric(rss).await.unwrap();
        (now - before >= 48.0 * MIB).then_some(now)
    })
    .await;

    let (status, _) = b.clear("leak").await;
    assert_eq!(status, 200);
    eventually("RSS to drop by 32 MiB", Duration::from_secs(20), || async {
        let now = b.metric(rss).await.unwrap();
        (grown - now >= 32.0 * MIB).then_some(())
    })
    .await;

    // A leak with a duration gives the memory back by itself.
    let before = b.metric(rss).await.unwrap();
    let (status, _) = b
        .inject("leak", r#"{"rate_mib_per_second": 128, "duration_seconds": 0.5}"#)
        .await;
    assert_eq!(status, 200);
    eventually("the leak to expire", Duration::from_secs(20), || async {
        b.faults().await["active"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    eventually("RSS to come back", Duration::from_secs(20), || async {
        let now = b.metric(rss).await.unwrap();
        (now - before < 16.0 * MIB).then_some(())
    })
    .await;
    b.stop().await;
}
