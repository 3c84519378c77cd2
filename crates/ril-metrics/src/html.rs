//! The pieces of ril's report.html pages (a grid's, a cell's, a training run's): Markdown tables,
//! inline SVG plots, PNG figures and configs in one self-contained page (SVG plots inline, PNG figures as data URIs, no
//! script or style from the network) that reads on a phone: tables scroll sideways inside their
//! own box and figures shrink to the screen. A small inline script records what rendered
//! (`data-tables`, `data-images`, `data-images-loaded`, `data-svgs`, `data-page-width`,
//! `data-viewport-width` on `<body>`), which the headless-Chromium test reads back.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;

/// `s` with HTML's special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Markdown ril writes (`# ` titles, pipe tables, paragraphs) as HTML: each table in a
/// sideways-scrolling box, its first row the header.
pub fn markdown(md: &str) -> String {
    let mut out = String::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let flush = |rows: &mut Vec<Vec<String>>, out: &mut String| {
        if rows.is_empty() {
            return;
        }
        out.push_str("<div class=\"scroll\"><table>\n");
        for (i, row) in rows.iter().enumerate() {
            let tag = if i == 0 { "th" } else { "td" };
            out.push_str("<tr>");
            for cell in row {
                let _ = write!(out, "<{tag}>{}</{tag}>", escape(cell));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table></div>\n");
        rows.clear();
    };
    for line in md.lines() {
        let t = line.trim();
        if t.starts_with('|') {
            if t.starts_with("|---") || t.starts_with("| ---") {
                continue;
            }
            rows.push(
                t.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect(),
            );
            continue;
        }
        flush(&mut rows, &mut out);
        if let Some(title) = t.strip_prefix("# ") {
            let _ = writeln!(out, "<h3>{}</h3>", escape(title));
        } else if !t.is_empty() {
            let _ = writeln!(out, "<p>{}</p>", escape(t));
        }
    }
    flush(&mut rows, &mut out);
    out
}

/// An SVG file inline in a figure with `caption` (its XML prolog dropped).
pub fn svg_figure(path: &Path, caption: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let start = text
        .find("<svg")
        .with_context(|| format!("{} holds no <svg> element", path.display()))?;
    Ok(format!(
        "<figure>{}<figcaption>{}</figcaption></figure>\n",
        &text[start..],
        escape(caption)
    ))
}

/// A PNG file as a data-URI image in a figure with `caption`.
pub fn png_figure(path: &Path, caption: &str) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        anyhow::bail!("{} is not a PNG file", path.display());
    }
    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(format!(
        "<figure><img alt=\"{0}\" src=\"data:image/png;base64,{data}\"><figcaption>{0}</figcaption></figure>\n",
        escape(caption)
    ))
}

/// A text file (a config) folded away under its name.
pub fn text_details(path: &Path, name: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!(
        "<details><summary>{}</summary><pre>{}</pre></details>\n",
        escape(name),
        escape(&text)
    ))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:0.75rem;line-height:1.4}\
h1{font-size:1.4rem}h2{font-size:1.2rem;border-bottom:1px solid #ccc}h3{font-size:1rem}\
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:0.85rem}\
th,td{border:1px solid #ccc;padding:0.2rem 0.45rem;text-align:right;white-space:nowrap}\
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}\
figure{margin:0.75rem 0}figure img,figure svg{max-width:100%;height:auto;display:block}\
figcaption{font-size:0.85rem;color:#555}pre{overflow-x:auto;font-size:0.8rem;background:#f7f7f7;padding:0.5rem}";

const SCRIPT: &str = "window.addEventListener('load',function(){var b=document.body,\
im=Array.prototype.slice.call(document.images),\
sv=Array.prototype.slice.call(document.querySelectorAll('figure svg'));\
b.dataset.tables=document.querySelectorAll('table').length;b.dataset.images=im.length;\
b.dataset.imagesLoaded=im.filter(function(i){return i.complete&&i.naturalWidth>0}).length;\
b.dataset.svgs=sv.filter(function(s){return s.getBoundingClientRect().width>0}).length;\
b.dataset.pageWidth=document.documentElement.scrollWidth;\
b.dataset.viewportWidth=document.documentElement.clientWidth;});";

/// The whole page: `title` and `(heading, html)` sections.
pub fn page(title: &str, sections: &[(String, String)]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{0}</title><style>{STYLE}</style></head>\n<body><h1>{0}</h1>\n",
        escape(title)
    );
    for (heading, html) in sections {
        let _ = writeln!(
            out,
            "<section><h2>{}</h2>\n{html}</section>",
            escape(heading)
        );
    }
    let _ = writeln!(out, "<script>{SCRIPT}</script></body></html>");
    out
}
