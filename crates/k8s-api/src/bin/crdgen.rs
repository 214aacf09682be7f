//! `crdgen`: writes the Link CRD YAML into the chart (or to stdout with `-`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yaml = strait_k8s_api::link::crd_yaml()?;
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("-") {
        print!("{yaml}");
        return Ok(());
    }
    let path = arg.map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../charts/strait-multicluster/crds/link.yaml")
    });
    std::fs::write(&path, yaml)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
