//! `railproxy delta bench --sweep`: the measurements behind the encoder's defaults.

use delta::codec::{DeltaParams, Strategy, Tuning};

use super::BenchArgs;
use super::bench::{Dcz, Method, load, measure};
use crate::exit::CmdResult;

fn level(l: i32) -> Dcz {
    Dcz { label: format!("zstd -{l} --patch-from"), params: DeltaParams::level(l), bases: 1, slow: l >= 13 }
}

fn tuned(label: &str, strategy: Strategy, bias: i8, search_log: u32, bases: usize) -> Dcz {
    Dcz {
        label: label.into(),
        params: DeltaParams {
            tuning: Some(Tuning { strategy, table_log_bias: bias, search_log, min_match: 5, target_length: 8 }),
            ..DeltaParams::level(3)
        },
        bases,
        slow: false,
    }
}

pub fn run(args: &BenchArgs) -> CmdResult {
    let sets = load(args)?;
    let mut methods: Vec<Box<dyn Method>> = Vec::new();
    for l in [1, 2, 3, 4, 5, 6, 7, 9, 12, 15, 19] {
        methods.push(Box::new(level(l)));
    }
    methods.push(Box::new(Dcz {
        label: "zstd -3 + long-distance matching".into(),
        params: DeltaParams { long_distance: true, ..DeltaParams::level(3) },
        bases: 1,
        slow: false,
    }));
    methods.push(Box::new(Dcz {
        label: "zstd -7 + long-distance matching".into(),
        params: DeltaParams { long_distance: true, ..DeltaParams::level(7) },
        bases: 1,
        slow: false,
    }));
    for l in [1, 2] {
        methods.push(Box::new(Dcz {
            label: format!("zstd -{l} + long-distance matching"),
            params: DeltaParams { long_distance: true, ..DeltaParams::level(l) },
            bases: 1,
            slow: false,
        }));
    }
    methods.push(Box::new(tuned("fast, tables = base", Strategy::Fast, 0, 1, 1)));
    methods.push(Box::new(tuned("dfast, tables = base", Strategy::Dfast, 0, 1, 1)));
    methods.push(Box::new(tuned("dfast, tables = base x2", Strategy::Dfast, 1, 1, 1)));
    methods.push(Box::new(Dcz {
        label: "zstd -3, window 2 MiB (not RFC)".into(),
        params: DeltaParams { window_log: Some(21), ..DeltaParams::level(3) },
        bases: 1,
        slow: false,
    }));
    methods.push(Box::new(Dcz { label: "zstd -3, 2 earlier versions as base".into(), bases: 2, ..level(3) }));
    methods.push(Box::new(Dcz { label: "zstd -3, 3 earlier versions as base".into(), bases: 3, ..level(3) }));
    methods.push(Box::new(tuned("greedy, search 2^6, tables = base/2", Strategy::Greedy, -1, 6, 1)));
    methods.push(Box::new(tuned("lazy, search 2^5, tables = base/2", Strategy::Lazy, -1, 5, 1)));
    methods.push(Box::new(tuned("lazy, search 2^6, tables = base", Strategy::Lazy, 0, 6, 1)));
    methods.push(Box::new(tuned("lazy2, search 2^5, tables = base", Strategy::Lazy2, 0, 5, 1)));
    methods.push(Box::new(tuned("lazy2, search 2^5, tables = base x2", Strategy::Lazy2, 1, 5, 1)));
    methods.push(Box::new(tuned("lazy, search 2^6, 2 earlier versions", Strategy::Lazy, -1, 6, 2)));
    methods.push(Box::new(tuned("lazy, search 2^6, 3 earlier versions", Strategy::Lazy, -1, 6, 3)));
    for (stride, level) in [(1, 3), (2, 3), (4, 3), (8, 3), (16, 3), (4, 1), (4, 6)] {
        methods.push(Box::new(Dcz {
            label: format!("sampled index, stride {stride}, entropy level {level}"),
            params: DeltaParams::sampled(stride, level),
            bases: 1,
            slow: false,
        }));
    }
    methods.push(Box::new(Dcz {
        label: "railproxy default (lazy, 2^6, base/2)".into(),
        params: DeltaParams::default(),
        bases: 1,
        slow: false,
    }));
    methods.push(Box::new(super::sweep_brotli::BrotliDict(5)));
    methods.push(Box::new(super::sweep_brotli::BrotliDict(11)));

    println!(
        "| {:<44} | {:>8} | {:>8} | {:>8} |",
        "encoder (base = previous version unless noted)", "% raw", "enc MB/s", "dec MB/s"
    );
    println!("|{:-<46}|{:->9}:|{:->9}:|{:->9}:|", "", "", "", "");
    let wanted = |label: String| args.only.as_ref().is_none_or(|only| only.split('|').any(|text| label.contains(text)));
    for m in methods.iter().filter(|m| wanted(m.label())) {
        let r = measure(&sets, m.as_ref(), args.repeat)?;
        println!(
            "| {:<44} | {:>7.3}% | {:>8.1} | {:>8.0} |",
            m.label(),
            r.total.pct(),
            r.total.encode_mbs,
            r.total.decode_mbs
        );
    }
    println!("\nSizes include the 40-byte dcz header (36 for dcb). MB/s: median over pairs, one core.");
    Ok(())
}
