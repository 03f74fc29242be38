//! Write the busybox test image archive: `cargo run -p skiff-testing --example busybox-image -- OUT.tar`.

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "busybox.tar".into());
    skiff_testing::write_busybox_image(std::path::Path::new(&out))?;
    println!("wrote {out} ({})", skiff_testing::BUSYBOX_IMAGE);
    Ok(())
}
