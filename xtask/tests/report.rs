//! Report rendering on a committed grid (tests/fixtures/results.json: three cells, the five
//! models without a sequence, one metric missing in places): the rows and columns of table3 and
//! table6, values with forgetting worked out by hand, and results.json written back unchanged.

use serde_json::Value;
use xtask::experiment::report::{parse_results, render_grid, stage_tables};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/results.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A Markdown table as rows of trimmed cells (header first, the |---| line dropped).
fn md_rows(md: &str) -> Vec<Vec<String>> {
    md.lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], name: &str) -> &'a [String] {
    rows.iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no row {name:?} in {rows:?}"))
}

#[test]
fn table3_has_a_row_per_cell_then_averages_then_the_plain_models() {
    let (cells, models) = parse_results(&fixture()).unwrap();
    let r = render_grid(&cells, &models).unwrap();
    let rows = md_rows(&r.table3_md);
    // Every metric of ril eval is a column; the fixture's runs computed the first four.
    let header = [
        "cell",
        "aesthetic",
        "hps",
        "png_kb",
        "jpeg_kb",
        "clip_score",
        "fid",
        "judge_accuracy",
    ];
    assert_eq!(rows[0], header);
    let names: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "baseline-AHC",
            "rid-AHC",
            "rid-CHA",
            "baseline average",
            "rid average",
            "base model",
            "single A",
            "single H",
            "single C",
            "soup",
            "joint",
        ]
    );
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{r:?}");
    }
    // Final value (forgetting at the last stage: max over earlier stages of how much better
    // they were; higher is better for aesthetic and hps, lower for the file sizes).
    // baseline-AHC aesthetic 5, 6, 5.5, 5.25: 6 − 5.25 = 0.75; png_kb 10, 10, 10, 8: 8 − 10.
    // The fixture computed no CLIP score, FID or judge accuracy: those columns show "–".
    assert!(row(&rows, "baseline-AHC")[5..].iter().all(|c| c == "–"));
    assert_eq!(
        row(&rows, "baseline-AHC")[1..5],
        [
            "5.2500 (0.7500)",
            "0.3750 (0.1250)",
            "8.0000 (-2.0000)",
            "2.0000 (-1.0000)"
        ]
    );
    // rid-AHC lacks jpeg_kb at stage +H: no final value and no forgetting for that column.
    assert_eq!(row(&rows, "rid-AHC")[4], "–");
    // rid-CHA png_kb 10, 7, 8, 9: 9 − 7 = 2.
    assert_eq!(row(&rows, "rid-CHA")[3], "9.0000 (2.0000)");
    // Averages over the method's cells that have the metric: aesthetic (6 + 7) / 2 with
    // forgetting (0.5 − 1.5) / 2; jpeg_kb from rid-CHA alone.
    assert_eq!(
        row(&rows, "rid average")[1..5],
        [
            "6.5000 (-0.5000)",
            "0.5000 (0.1250)",
            "9.0000 (0.5000)",
            "2.5000 (0.5000)"
        ]
    );
    assert_eq!(
        row(&rows, "baseline average")[1..],
        row(&rows, "baseline-AHC")[1..]
    );
    // Models without a sequence: values only; the base is the first cell's stage 0.
    assert_eq!(
        row(&rows, "base model")[1..5],
        ["5.0000", "0.2500", "10.0000", "3.0000"]
    );
    assert_eq!(row(&rows, "soup")[4], "–");
}

#[test]
fn table3_csv_has_a_value_and_a_forgetting_column_per_metric() {
    let (cells, models) = parse_results(&fixture()).unwrap();
    let csv = render_grid(&cells, &models).unwrap().table3_csv;
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        lines[0],
        [
            "cell",
            "aesthetic",
            "aesthetic_forgetting",
            "hps",
            "hps_forgetting",
            "png_kb",
            "png_kb_forgetting",
            "jpeg_kb",
            "jpeg_kb_forgetting",
            "clip_score",
            "clip_score_forgetting",
            "fid",
            "fid_forgetting",
            "judge_accuracy",
            "judge_accuracy_forgetting",
        ]
    );
    // 3 cells + 2 averages + base + 5 models, each with 1 + 2 × 7 fields; names without spaces.
    assert_eq!(lines.len(), 1 + 3 + 2 + 1 + 5);
    for l in &lines {
        assert_eq!(l.len(), 15, "{l:?}");
    }
    assert_eq!(
        lines[1][..9],
        [
            "baseline-AHC",
            "5.25",
            "0.75",
            "0.375",
            "0.125",
            "8",
            "-2",
            "2",
            "-1"
        ]
    );
    assert_eq!(lines[5][0], "rid_average");
    assert_eq!(lines[6][0], "base_model");
    assert_eq!(
        lines[10][..9],
        ["soup", "5.25", "", "0.5", "", "9", "", "", ""]
    );
}

#[test]
fn table6_sets_joint_tuning_against_rids_average() {
    let (cells, models) = parse_results(&fixture()).unwrap();
    let t6 = render_grid(&cells, &models)
        .unwrap()
        .table6_md
        .expect("a joint model");
    assert!(t6.starts_with("# Joint tuning vs RID\n\n"), "{t6}");
    let rows = md_rows(&t6);
    assert_eq!(
        rows[0],
        [
            "model",
            "aesthetic",
            "hps",
            "png_kb",
            "jpeg_kb",
            "clip_score",
            "fid",
            "judge_accuracy"
        ]
    );
    assert_eq!(
        rows[1],
        [
            "joint tuning",
            "5.5000",
            "0.6250",
            "9.5000",
            "2.7500",
            "–",
            "–",
            "–"
        ]
    );
    // The final values of the rid average row of table3, without forgetting.
    assert_eq!(
        rows[2][..5],
        [
            "RID (average over orders)",
            "6.5000",
            "0.5000",
            "9.0000",
            "2.5000"
        ]
    );
    assert_eq!(rows[2][5..], ["–", "–", "–"]);
    assert_eq!(rows.len(), 3);
    // Without a joint model there is no table6.
    let no_joint: Vec<_> = models.into_iter().filter(|(n, _)| n != "joint").collect();
    assert!(render_grid(&cells, &no_joint).unwrap().table6_md.is_none());
}

#[test]
fn results_json_is_written_back_as_read() {
    // results.json is what `all-orders` writes and what later tools read: rendering the parsed
    // fixture gives the same JSON.
    let v = fixture();
    let (cells, models) = parse_results(&v).unwrap();
    assert_eq!(render_grid(&cells, &models).unwrap().results, v);
}

#[test]
fn a_cells_table2_lists_its_stages_with_forgetting() {
    let (cells, _) = parse_results(&fixture()).unwrap();
    let (id, stages) = &cells[2];
    let (md, csv) = stage_tables(id, stages).unwrap();
    assert!(md.starts_with("# rid-CHA\n\n"), "{md}");
    let rows = md_rows(&md);
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["stage", "SD", "+C", "+H", "+A"]);
    // Stage +C: png_kb 10 → 7 is no forgetting (7 − 10 = −3); the base row has no forgetting.
    assert_eq!(rows[2][3], "7.0000 (-3.0000)");
    assert_eq!(rows[1][3], "10.0000");
    assert_eq!(csv.lines().count(), 1 + 4);
}
