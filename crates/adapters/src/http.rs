//! What every HTTP adapter shares.

/// GETs `path` on the server at `base` and reads the JSON answer; errors
/// name the server (`what`) and its URL.
pub async fn get_json(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    query: &[(&str, &str)],
    what: &str,
) -> Result<serde_json::Value, String> {
    http.get(format!("{}{path}", base.trim_end_matches('/')))
        .query(query)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{what} at {base}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{what} at {base} answered unreadable JSON: {e}"))
}
