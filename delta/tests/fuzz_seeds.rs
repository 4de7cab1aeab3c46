//! Replays the fuzz targets' committed seed corpus, so CI covers them on stable Rust.

use std::path::PathBuf;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

fn target_fn(target: &str) -> fn(&[u8]) {
    match target {
        "decode_raw" => delta::testing::fuzzing::decode_raw,
        "round_trip" => delta::testing::fuzzing::round_trip,
        "available_dictionary" => delta::testing::fuzzing::available_dictionary,
        other => panic!("no fuzz target {other}"),
    }
}

#[test]
fn replay_fuzz_seeds() {
    let mut replayed = 0;
    for target in ["decode_raw", "round_trip", "available_dictionary"] {
        let dir = seeds_dir().join(target);
        let run = target_fn(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} holds no seeds", dir.display());
        for file in files {
            run(&std::fs::read(&file).unwrap());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} seeds");
}

#[test]
fn committed_seeds_match_the_generator() {
    // If the codec's output changes, the committed seeds go stale; regenerate them with
    // `cargo test --release -p delta --test fuzz_seeds -- --ignored`.
    for (target, name, bytes) in delta::testing::fuzzing::seed_inputs() {
        let path = seeds_dir().join(target).join(&name);
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(committed == bytes, "{} is stale", path.display());
        target_fn(target)(&bytes);
    }
}

#[test]
#[ignore = "writes files: run to regenerate the seed corpus"]
fn write_fuzz_seeds() {
    for (target, name, bytes) in delta::testing::fuzzing::seed_inputs() {
        let dir = seeds_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
