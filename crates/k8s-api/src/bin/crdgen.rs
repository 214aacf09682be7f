//! `crdgen`: writes the CRD YAML into the charts: the Link CRD into `strait-multicluster`, the
//! policy CRDs into `strait-control-plane`. With `-`, prints them all to stdout instead.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let charts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts");
    let mut files = vec![(
        charts.join("strait-multicluster/crds/link.yaml"),
        strait_k8s_api::link::crd_yaml()?,
    )];
    for (name, yaml) in strait_k8s_api::policy::crd_files()? {
        files.push((charts.join("strait-control-plane/crds").join(name), yaml));
    }
    if std::env::args().nth(1).as_deref() == Some("-") {
        for (_, yaml) in &files {
            print!("---\n{yaml}");
        }
        return Ok(());
    }
    for (path, yaml) in files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, yaml)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
