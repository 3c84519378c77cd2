//! The imagefolder layout: a written data set reads back item for item, an existing non-empty
//! folder or a count of 0 is refused with nothing left behind, and every malformed folder is an
//! error naming the file (and the line of metadata.jsonl).

use std::path::{Path, PathBuf};

use toy_shapes::folder::{FolderError, ImageFolder, METADATA, write_shapes};
use toy_shapes::{Objects, Spec, Split};

/// A fresh empty folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("toy-shapes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A folder with one valid image `a.png` and the given metadata text.
fn folder_with(name: &str, metadata: &str) -> PathBuf {
    let dir = scratch(name);
    let s = Spec::new(0, Split::Train).sample(0);
    s.image.save(dir.join("a.png")).unwrap();
    std::fs::write(dir.join(METADATA), metadata).unwrap();
    dir
}

fn open_err(dir: &Path) -> String {
    ImageFolder::open(dir)
        .expect_err("a bad folder")
        .to_string()
}

#[test]
fn a_written_data_set_reads_back_item_for_item() {
    let root = scratch("roundtrip");
    let dir = root.join("shapes");
    let spec = Spec::new(11, Split::Heldout).objects(Objects::Mixed);
    let mut seen = 0;
    assert_eq!(write_shapes(&dir, &spec, 7, |n| seen = n).unwrap(), 7);
    assert_eq!(seen, 7);
    let folder = ImageFolder::open(&dir).unwrap();
    assert_eq!(folder.items.len(), 7);
    for (i, item) in folder.items.iter().enumerate() {
        let s = spec.sample(i as u64);
        assert_eq!(item.path, dir.join(format!("{i:06}.png")));
        assert_eq!(item.caption, s.caption);
        assert_eq!(item.labels.as_ref(), Some(&s.labels));
        assert_eq!(item.line, i + 1);
        // PNG is lossless: the bytes read are the pixels drawn.
        assert_eq!(item.load_image().unwrap(), s.image);
    }
    // Nothing but the data set is left beside it (the temporary folder was renamed).
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["shapes"]);
    let first = std::fs::read_to_string(dir.join(METADATA)).unwrap();
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(line["file_name"], "000000.png");
    assert!(line["text"].is_string() && line["labels"]["objects"].is_array());
}

#[test]
fn writing_refuses_a_non_empty_folder_and_a_count_of_zero() {
    let root = scratch("refuse");
    let dir = root.join("out");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let spec = Spec::new(0, Split::Train);
    let e = write_shapes(&dir, &spec, 3, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&dir.display().to_string()) && e.contains("not empty"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
        "mine"
    );
    let empty = root.join("empty");
    let e = write_shapes(&empty, &spec, 0, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("count is 0"), "{e}");
    assert!(!empty.exists());
    // An existing empty folder is fine (it is replaced by the written one).
    std::fs::create_dir(&empty).unwrap();
    write_shapes(&empty, &spec, 2, |_| {}).unwrap();
    assert_eq!(ImageFolder::open(&empty).unwrap().items.len(), 2);
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary folder left: {names:?}");
}

#[test]
fn a_users_folder_without_labels_reads_and_blank_lines_keep_line_numbers() {
    let dir = folder_with(
        "nolabels",
        "{\"file_name\": \"a.png\", \"text\": \"a cat\", \"extra\": 1}\n\n{\"file_name\": \"./a.png\", \"text\": \"again\"}\n",
    );
    let f = ImageFolder::open(&dir).unwrap();
    assert_eq!(f.items.len(), 2);
    assert_eq!(f.items[0].labels, None);
    assert_eq!(f.items[1].line, 3);
    assert_eq!(f.items[1].caption, "again");
}

#[test]
fn a_malformed_line_is_named_by_file_and_line() {
    let dir = folder_with(
        "malformed",
        "{\"file_name\": \"a.png\", \"text\": \"ok\"}\n{\"file_name\": \"a.png\", \"text\": \n",
    );
    let e = open_err(&dir);
    let at = format!("{}:2:", dir.join(METADATA).display());
    assert!(e.contains(&at) && e.contains("not valid JSON"), "{e}");
    let dir = folder_with("notobject", "[1, 2]\n");
    assert!(open_err(&dir).contains("metadata.jsonl:1: not a JSON object"));
}

#[test]
fn a_missing_field_is_named_with_its_line() {
    let dir = folder_with("nofile", "{\"text\": \"a cat\"}\n");
    let e = open_err(&dir);
    assert!(
        e.contains("metadata.jsonl:1:") && e.contains("no field `file_name`"),
        "{e}"
    );
    let dir = folder_with(
        "notext",
        "{\"file_name\": \"a.png\", \"text\": \"x\"}\n{\"file_name\": \"a.png\"}\n",
    );
    let e = open_err(&dir);
    assert!(
        e.contains("metadata.jsonl:2:") && e.contains("no field `text`"),
        "{e}"
    );
    let dir = folder_with("nottext", "{\"file_name\": \"a.png\", \"text\": 3}\n");
    assert!(open_err(&dir).contains("field `text` is not a string"));
}

#[test]
fn a_missing_or_escaping_image_is_named_with_its_line() {
    let dir = folder_with(
        "missing",
        "{\"file_name\": \"a.png\", \"text\": \"x\"}\n{\"file_name\": \"b.png\", \"text\": \"x\"}\n",
    );
    let e = open_err(&dir);
    assert!(
        e.contains("metadata.jsonl:2:") && e.contains("\"b.png\": no such file"),
        "{e}"
    );
    for bad in ["../a.png", "/etc/hostname", "sub/../../a.png", ""] {
        let dir = folder_with(
            "escape",
            &format!("{{\"file_name\": {bad:?}, \"text\": \"x\"}}\n"),
        );
        let e = open_err(&dir);
        assert!(
            e.contains("metadata.jsonl:1:") && e.contains("not a relative path inside"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn bad_labels_an_empty_folder_and_no_metadata_are_named() {
    let dir = folder_with(
        "badlabels",
        "{\"file_name\": \"a.png\", \"text\": \"x\", \"labels\": {\"objects\": [], \"background\": \"teal\"}}\n",
    );
    let e = open_err(&dir);
    assert!(
        e.contains("metadata.jsonl:1: field `labels`") && e.contains("teal"),
        "{e}"
    );
    let dir = folder_with("empty", "\n\n");
    let e = open_err(&dir);
    assert!(e.contains("metadata.jsonl: no items"), "{e}");
    let dir = scratch("nometa");
    let e = open_err(&dir);
    assert!(e.contains(&dir.join(METADATA).display().to_string()), "{e}");
    assert!(matches!(
        ImageFolder::open(&dir),
        Err(FolderError::Io { .. })
    ));
}

#[test]
fn an_undecodable_image_is_named_when_loaded() {
    let dir = folder_with(
        "undecodable",
        "{\"file_name\": \"bad.png\", \"text\": \"x\"}\n",
    );
    std::fs::write(dir.join("bad.png"), b"not a png at all").unwrap();
    let f = ImageFolder::open(&dir).unwrap();
    let e = f.items[0].load_image().unwrap_err().to_string();
    assert!(
        e.contains(&dir.join("bad.png").display().to_string())
            && e.contains("not a decodable image"),
        "{e}"
    );
}

#[test]
fn an_image_whose_header_claims_too_many_pixels_is_refused_before_decoding() {
    let dir = folder_with("huge", "{\"file_name\": \"huge.png\", \"text\": \"x\"}\n");
    // 100000 x 100000 RGB would decode to 30 GB; the file holds only the header.
    ril_testkit::png_claiming(&dir.join("huge.png"), 100_000, 100_000);
    let f = ImageFolder::open(&dir).unwrap();
    let e = f.items[0].load_image().unwrap_err().to_string();
    assert!(
        e.contains(&dir.join("huge.png").display().to_string())
            && e.contains("100000x100000")
            && e.contains("8192x8192"),
        "{e}"
    );
}
