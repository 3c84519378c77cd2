//! Figures of images with words: a grid of images with their captions written under them, and
//! a grid with row labels and column headers (the paper's Fig. 5/6 layout), lettered in font8x8's
//! 8×8 ASCII glyphs so that no font file is needed.

use image::{Rgb, RgbImage};

const GLYPH: u32 = 8;
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const PAPER: Rgb<u8> = Rgb([255, 255, 255]);
/// Space around images and text, in pixels.
const PAD: u32 = 4;

/// The width in pixels of `text` at `scale` (8·scale per character).
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Writes `text` with its top-left corner at (x, y), each glyph pixel a `scale`×`scale` square;
/// characters outside ASCII are drawn as `?`; what falls outside the canvas is clipped.
pub fn draw_text(canvas: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, colour: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        let x0 = x + i as u32 * GLYPH * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..GLYPH {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x0 + col * scale + dx, y + row as u32 * scale + dy);
                        if px < canvas.width() && py < canvas.height() {
                            canvas.put_pixel(px, py, colour);
                        }
                    }
                }
            }
        }
    }
}

/// `text` broken at spaces into lines of at most `width` characters (a longer word is cut).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        while word.chars().count() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if needed > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn upscale(img: &RgbImage, scale: u32) -> RgbImage {
    if scale <= 1 {
        return img.clone();
    }
    image::imageops::resize(
        img,
        img.width() * scale,
        img.height() * scale,
        image::imageops::FilterType::Nearest,
    )
}

/// Images in rows of `cols`, each enlarged `scale` times (nearest neighbour, so pixels stay
/// visible) with its caption wrapped under it.
pub fn captioned_grid(cells: &[(RgbImage, String)], cols: usize, scale: u32) -> RgbImage {
    let cols = cols.clamp(1, cells.len().max(1));
    let rows = cells.len().div_ceil(cols);
    let cell_w = cells.iter().map(|(i, _)| i.width()).max().unwrap_or(0) * scale.max(1);
    let cell_h = cells.iter().map(|(i, _)| i.height()).max().unwrap_or(0) * scale.max(1);
    let chars = (cell_w / GLYPH).max(1) as usize;
    let lines = cells
        .iter()
        .map(|(_, c)| wrap(c, chars).len())
        .max()
        .unwrap_or(0) as u32;
    let text_h = lines * (GLYPH + 2);
    let (w, h) = (
        PAD + cols as u32 * (cell_w + PAD),
        PAD + rows as u32 * (cell_h + text_h + 2 * PAD),
    );
    let mut canvas = RgbImage::from_pixel(w, h, PAPER);
    for (k, (img, caption)) in cells.iter().enumerate() {
        let (r, c) = ((k / cols) as u32, (k % cols) as u32);
        let x = PAD + c * (cell_w + PAD);
        let y = PAD + r * (cell_h + text_h + 2 * PAD);
        image::imageops::replace(&mut canvas, &upscale(img, scale), x as i64, y as i64);
        for (l, line) in wrap(caption, chars).iter().enumerate() {
            draw_text(
                &mut canvas,
                x,
                y + cell_h + PAD + l as u32 * (GLYPH + 2),
                line,
                1,
                INK,
            );
        }
    }
    canvas
}

/// A table of images: `rows[i][j]` in row i, column j, with `row_labels` (wrapped to
/// `label_chars` characters) at the left and `col_headers` above, each image enlarged `scale`
/// times.
pub fn labelled_grid(
    row_labels: &[String],
    col_headers: &[String],
    rows: &[Vec<RgbImage>],
    label_chars: usize,
    scale: u32,
) -> RgbImage {
    let cols = rows
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .max(col_headers.len());
    let all = rows.iter().flatten();
    let cell_w = all.clone().map(RgbImage::width).max().unwrap_or(0) * scale.max(1);
    let cell_h = all.map(RgbImage::height).max().unwrap_or(0) * scale.max(1);
    let label_w = label_chars as u32 * GLYPH + PAD;
    let header_chars = (cell_w / GLYPH).max(1) as usize;
    let header_lines = col_headers
        .iter()
        .map(|h| wrap(h, header_chars).len())
        .max()
        .unwrap_or(0) as u32;
    let header_h = header_lines * (GLYPH + 2) + PAD;
    let w = PAD + label_w + cols as u32 * (cell_w + PAD);
    let h = PAD + header_h + rows.len() as u32 * (cell_h + PAD);
    let mut canvas = RgbImage::from_pixel(w, h, PAPER);
    for (j, header) in col_headers.iter().enumerate() {
        let x = PAD + label_w + j as u32 * (cell_w + PAD);
        for (l, line) in wrap(header, header_chars).iter().enumerate() {
            draw_text(&mut canvas, x, PAD + l as u32 * (GLYPH + 2), line, 1, INK);
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let y = PAD + header_h + i as u32 * (cell_h + PAD);
        if let Some(label) = row_labels.get(i) {
            for (l, line) in wrap(label, label_chars).iter().enumerate() {
                draw_text(&mut canvas, PAD, y + l as u32 * (GLYPH + 2), line, 1, INK);
            }
        }
        for (j, img) in row.iter().enumerate() {
            let x = PAD + label_w + j as u32 * (cell_w + PAD);
            image::imageops::replace(&mut canvas, &upscale(img, scale), x as i64, y as i64);
        }
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_words_and_width() {
        assert_eq!(
            wrap("a large red circle on the left", 10),
            vec!["a large", "red circle", "on the", "left"]
        );
        assert_eq!(wrap("abcdefghijkl", 5), vec!["abcde", "fghij", "kl"]);
        assert!(wrap("", 5).is_empty());
    }

    #[test]
    fn text_is_drawn_where_asked_and_clipped() {
        let mut canvas = RgbImage::from_pixel(40, 12, PAPER);
        draw_text(&mut canvas, 2, 2, "HI", 1, INK);
        let inked: Vec<(u32, u32)> = canvas
            .enumerate_pixels()
            .filter(|(_, _, p)| **p == INK)
            .map(|(x, y, _)| (x, y))
            .collect();
        // font8x8's H and I have ink; all of it lies in the two 8x8 cells from (2, 2).
        assert!(!inked.is_empty());
        assert!(
            inked
                .iter()
                .all(|&(x, y)| (2..18).contains(&x) && (2..10).contains(&y))
        );
        // Writing past the edge does not panic.
        draw_text(&mut canvas, 35, 8, "long text", 2, INK);
    }

    #[test]
    fn grids_have_the_cells_and_captions() {
        let red = RgbImage::from_pixel(4, 4, Rgb([255, 0, 0]));
        let cells = vec![(red.clone(), "a red one".to_string()); 3];
        let g = captioned_grid(&cells, 2, 4);
        // Two columns of 16-pixel cells, two rows; the images are where the layout puts them.
        assert_eq!(g.width(), PAD + 2 * (16 + PAD));
        assert_eq!(*g.get_pixel(PAD, PAD), Rgb([255, 0, 0]));
        assert_eq!(
            *g.get_pixel(PAD + 16 + PAD + 15, PAD + 15),
            Rgb([255, 0, 0])
        );
        assert!(g.pixels().any(|p| *p == INK));
        let t = labelled_grid(
            &["row".into()],
            &["base".into(), "task 1".into()],
            &[vec![red.clone(), red]],
            6,
            1,
        );
        assert_eq!(t.width(), PAD + 6 * GLYPH + PAD + 2 * (4 + PAD));
    }
}
