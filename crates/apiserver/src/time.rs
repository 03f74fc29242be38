//! Timestamps in the form Kubernetes uses (`metav1.Time`: RFC 3339, second precision, UTC).

/// Now, as `2024-01-02T03:04:05Z`.
pub fn now_rfc3339() -> String {
    rfc3339_after(0)
}

/// Now plus `seconds`, as RFC 3339.
pub fn rfc3339_after(seconds: i64) -> String {
    let ts = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now with microseconds, as `metav1.MicroTime` (events, leases).
pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_metav1_time() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
        assert!(skiff_api::registry::parse_rfc3339(&t).is_some());
        assert_eq!(super::now_micro().len(), 27);
    }
}
