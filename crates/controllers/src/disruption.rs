//! TODO

/// Start.
pub async fn start(ctx: crate::Context) {
    ctx.stop.cancelled().await;
}
