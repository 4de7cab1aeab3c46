//! Replays the committed seeds of the fuzz targets in `proxy/fuzz`, so CI covers them on stable.

#[test]
fn replay_fuzz_seeds() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for target in ["config", "values"] {
        let run = match target {
            "config" => railproxy::fuzzing::config,
            _ => railproxy::fuzzing::values,
        };
        let dir = seeds.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no seeds", dir.display());
        for file in &files {
            run(&std::fs::read(file).unwrap());
        }
        eprintln!("{target}: replayed {} seeds", files.len());
    }
}

#[test]
fn the_example_configurations_are_seeds_and_parse() {
    // The seeds hold copies of conf/*.yaml and the example fleet so that fuzzing starts from
    // real files.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, name) in [
        ("conf/edge.yaml", "edge.yaml"),
        ("conf/origin.yaml", "origin.yaml"),
        ("deploy/fleet.example.yaml", "fleet.yaml"),
    ] {
        let conf = std::fs::read(root.join("..").join(file)).unwrap();
        let seed = std::fs::read(root.join("fuzz/seeds/config").join(name)).unwrap();
        assert!(conf == seed, "proxy/fuzz/seeds/config/{name} is stale: copy {file} over it");
    }
}
