//! report.html of a grid folder built from the committed results (tests/fixtures/results.json)
//! with one cell's table2, stages figure and config: self-contained (nothing fetched), every
//! table, plot and figure in the page; and, rendered by headless Chromium at a phone's width
//! (390 px asked; headless Chromium's narrowest window is 500 px), every table and image is
//! there, every image decodes, and the page itself does not scroll sideways. Chromium runs where it is installed (CI installs Debian's and sets
//! RIL_REQUIRE_CHROMIUM=1, making its absence a failure); elsewhere that part says it is skipped.

use std::path::{Path, PathBuf};

use serde_json::Value;
use xtask::experiment::report::{parse_results, write_grid_report, write_stage_tables};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/results.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A grid folder: the fixture's tables and plots, and for its first cell table2, a stages
/// figure and a config.
fn grid(dir: &Path) -> (PathBuf, Vec<String>) {
    let (cells, models) = parse_results(&fixture()).unwrap();
    let out = dir.join("grid");
    std::fs::create_dir_all(&out).unwrap();
    let (id, stages) = &cells[0];
    let cell = out.join(id);
    std::fs::create_dir_all(&cell).unwrap();
    write_stage_tables(&cell, id, stages).unwrap();
    let img = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 90])
    });
    img.save(cell.join("stages.png")).unwrap();
    std::fs::write(cell.join("config.toml"), "seed = 0\n# <not a tag> & more\n").unwrap();
    write_grid_report(&out, &cells, &models).unwrap();
    (out, cells.iter().map(|(id, _)| id.clone()).collect())
}

#[test]
fn the_grid_report_is_self_contained_and_renders_every_table_and_figure() {
    let dir = ril_testkit::scratch("report-html");
    let (out, ids) = grid(&dir);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let plots = std::fs::read_dir(out.join("plots")).unwrap().count();
    // Table 3, table 6 (the fixture has a joint model), the first cell's table 2.
    let tables = 3;
    assert_eq!(html.matches("<table>").count(), tables);
    assert_eq!(html.matches("<svg").count(), plots);
    assert_eq!(html.matches("<img ").count(), 1);
    for id in &ids {
        assert!(html.contains(&format!("Cell {id}")), "no section for {id}");
    }
    assert!(html.contains("rid average") && html.contains("joint tuning"));
    // The config is shown escaped, and nothing is loaded from elsewhere (the SVG namespace is a
    // name, not a request).
    assert!(html.contains("# &lt;not a tag&gt; &amp; more"));
    for attr in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "@import",
        "url(http",
    ] {
        assert!(!html.contains(attr), "the page fetches something: {attr}");
    }
    assert!(html.contains("name=\"viewport\""));

    let Some(dom) = ril_testkit::render_in_chromium(&out.join("report.html")) else {
        return;
    };
    let attr = |name: &str| ril_testkit::dom_number(&dom, name);
    assert_eq!(attr("data-tables"), tables);
    assert_eq!(attr("data-images"), 1);
    assert_eq!(
        attr("data-images-loaded"),
        1,
        "the stages figure did not decode"
    );
    assert_eq!(attr("data-svgs"), plots, "a plot did not render");
    // The tables scroll inside their own boxes: the page is no wider than the window (headless
    // Chromium keeps windows at least 500 px wide, so that is the narrowest it checks).
    let (page, window) = (attr("data-page-width"), attr("data-viewport-width"));
    assert!(
        window <= 500 && page <= window,
        "page {page} px in a {window} px window"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
