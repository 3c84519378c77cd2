//! `ril data coco` on a small fake COCO (captions file in COCO's layout, JPEG images): the pairs
//! are distinct images, each with one of its own captions, the images centre-cropped and
//! resized, prompts.txt in the same order, the same seed gives the same bytes; the folder is an
//! imagefolder that ril's reader and `ril score`'s image listing take as it is; a missing image,
//! a count above the captioned images, a malformed file and a file_name with a path are refused
//! by name with nothing written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ril_testkit::scratch;
use toy_shapes::folder::ImageFolder;

fn ril(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ril"))
        .args(args)
        .output()
        .expect("run ril")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Five 48x32 JPEGs (red, green and blue thirds from left to right, a brightness per image)
/// and a captions file: images 1..=4 have two or three captions, image 5 none.
fn fake_coco(dir: &Path) -> (PathBuf, PathBuf) {
    let images = dir.join("val2014");
    std::fs::create_dir_all(&images).unwrap();
    let mut listed = Vec::new();
    let mut captions = Vec::new();
    for id in 1..=5u64 {
        let v = 100 + 30 * id as u8;
        let img = image::RgbImage::from_fn(48, 32, |x, _| match x / 16 {
            0 => image::Rgb([v, 0, 0]),
            1 => image::Rgb([0, v, 0]),
            _ => image::Rgb([0, 0, v]),
        });
        let name = format!("COCO_val2014_{id:012}.jpg");
        img.save(images.join(&name)).unwrap();
        listed.push(serde_json::json!({"id": id, "file_name": name, "width": 48, "height": 32}));
        if id < 5 {
            for k in 0..(2 + id % 2) {
                captions.push(serde_json::json!({
                    "id": 100 * id + k, "image_id": id,
                    "caption": format!("  Image {id},\ncaption {k}. "),
                }));
            }
        }
    }
    let ann = dir.join("captions_val2014.json");
    let file = serde_json::json!({"info": {}, "images": listed, "annotations": captions});
    std::fs::write(&ann, file.to_string()).unwrap();
    (ann, images)
}

fn coco(ann: &Path, images: &Path, out: &Path, count: &str, seed: &str) -> Output {
    ril(&[
        "data",
        "coco",
        "--annotations",
        ann.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--count",
        count,
        "--seed",
        seed,
        "--size",
        "16",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn data_coco_draws_distinct_captioned_images_and_writes_an_imagefolder() {
    let dir = scratch("coco");
    let (ann, images) = fake_coco(&dir);
    let out = dir.join("set");
    let o = coco(&ann, &images, &out, "3", "7");
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metadata.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let prompts = std::fs::read_to_string(out.join("prompts.txt")).unwrap();
    let mut ids = Vec::new();
    for (i, (l, p)) in lines.iter().zip(prompts.lines()).enumerate() {
        let id = l["coco_image_id"].as_u64().unwrap();
        let cap = l["coco_caption_id"].as_u64().unwrap();
        // Its own caption (ids 100·image + k), whitespace made single spaces, never image 5's.
        assert!((1..=4).contains(&id) && cap / 100 == id, "{l}");
        assert_eq!(l["text"], format!("Image {id}, caption {}.", cap % 100));
        assert_eq!(l["text"].as_str().unwrap(), p);
        assert_eq!(l["file_name"], format!("{i:06}.png"));
        ids.push(id);
        // Centre-cropped (x 8..40 of 48) and resized to 16: red, green, blue from the left.
        let img = image::open(out.join(format!("{i:06}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (16, 16));
        let (left, mid, right) = (
            img.get_pixel(0, 8),
            img.get_pixel(8, 8),
            img.get_pixel(15, 8),
        );
        assert!(left[0] > 90 && left[1] < 40, "{left:?}");
        assert!(mid[1] > 90 && mid[0] < 40 && mid[2] < 40, "{mid:?}");
        assert!(right[2] > 90 && right[1] < 40, "{right:?}");
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct images");
    // An imagefolder as ril (and datasets) read it; the image listing skips metadata.jsonl and
    // prompts.txt.
    let folder = ImageFolder::open(&out).unwrap();
    assert_eq!(folder.items.len(), 3);
    assert_eq!(rewards::images::image_files(&out).unwrap().len(), 3);
    // Same seed, same bytes.
    let again = dir.join("again");
    assert!(coco(&ann, &images, &again, "3", "7").status.success());
    for name in ["metadata.jsonl", "prompts.txt", "000000.png", "000002.png"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_coco_refuses_bad_inputs_by_name_and_writes_nothing() {
    let dir = scratch("coco-bad");
    let (ann, images) = fake_coco(&dir);
    let out = dir.join("set");
    let refused = |o: Output, words: &[&str]| {
        let e = stderr(&o);
        assert!(!o.status.success(), "accepted");
        for w in words {
            assert!(e.contains(w), "{w:?} not in: {e}");
        }
        assert!(!out.exists(), "something was written");
    };
    // Four images have captions.
    refused(
        coco(&ann, &images, &out, "5", "0"),
        &["--count 5", "only 4 images"],
    );
    // A chosen image missing (all four are chosen).
    let gone = images.join("COCO_val2014_000000000003.jpg");
    let saved = std::fs::read(&gone).unwrap();
    std::fs::remove_file(&gone).unwrap();
    refused(
        coco(&ann, &images, &out, "4", "0"),
        &["COCO_val2014_000000000003.jpg", "COCO image 3", "missing"],
    );
    std::fs::write(&gone, &saved).unwrap();
    // Not an image.
    std::fs::write(&gone, b"not a jpeg").unwrap();
    refused(
        coco(&ann, &images, &out, "4", "0"),
        &["COCO_val2014_000000000003.jpg", "not a readable image"],
    );
    std::fs::write(&gone, &saved).unwrap();
    // A malformed captions file, and a file_name that leaves the folder.
    let text = std::fs::read_to_string(&ann).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, &text[..text.len() / 2]).unwrap();
    refused(
        coco(&bad, &images, &out, "1", "0"),
        &["bad.json", "not a COCO captions file"],
    );
    std::fs::write(
        &bad,
        text.replace("COCO_val2014_000000000001.jpg", "../x.jpg"),
    )
    .unwrap();
    refused(
        coco(&bad, &images, &out, "1", "0"),
        &["bad.json", "image 1", "not a plain file name"],
    );
    // The folder of a good run is not overwritten.
    assert!(coco(&ann, &images, &out, "2", "0").status.success());
    let o = coco(&ann, &images, &out, "2", "1");
    assert!(
        !o.status.success() && stderr(&o).contains("exists"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
