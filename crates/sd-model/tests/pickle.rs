//! ril's own reader of `torch.save` files (sd_model::pickle) on files PyTorch 2.11 wrote
//! (tests/fixtures/fuzz, tools/parity/make_fuzz_seeds.py): both formats give torch's values
//! bit for bit (`torch.manual_seed(0); torch.randn(3, 4)`, printed by torch), a strided view
//! is gathered through its strides, and files whose storages are missing, short or corrupt,
//! or whose pickle builds other objects, are refused naming the file instead of reading zeros.

use std::path::{Path, PathBuf};

use sd_model::load::Weights;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fuzz")
        .join(name)
}

/// torch.randn(3, 4) after torch.manual_seed(0), as torch prints it (f32 round trip).
const BASE: [f32; 12] = [
    1.540_996_1,
    -0.293_428_9,
    -2.178_789_3,
    0.568_431_26,
    -1.084_522_4,
    -1.398_595_5,
    0.403_346_84,
    0.838_026_35,
    -0.719_257_6,
    -0.403_343_53,
    -0.596_635_34,
    0.182_036_49,
];

fn values(w: &Weights, key: &str) -> Vec<f32> {
    w.data(key).unwrap().to_vec().unwrap()
}

#[test]
fn both_formats_give_torchs_values_and_views_follow_their_strides() {
    for name in ["tiny_zip.pt", "tiny_legacy.pt"] {
        let w = Weights::open(&fixture(name), None).unwrap();
        let keys: Vec<&String> = w.entries().keys().collect();
        assert_eq!(
            keys,
            ["count", "layer.bias", "layer.weight", "view"],
            "{name}"
        );
        assert_eq!(values(&w, "layer.weight"), BASE, "{name}");
        assert_eq!(w.entries()["layer.weight"].shape, [3, 4]);
        assert_eq!(values(&w, "layer.bias"), [0.0, 1.0, 2.0], "{name}");
        assert_eq!(w.entries()["layer.bias"].dtype, "F16");
        assert!(!w.entries()["count"].float);
        assert_eq!(values(&w, "count"), [7.0]);
        // base.t()[1:3]: rows 1..3 of the transpose, i.e. columns 1 and 2 of base.
        let view: Vec<f32> = (1..3)
            .flat_map(|c| (0..3).map(move |r| BASE[r * 4 + c]))
            .collect();
        assert_eq!(w.entries()["view"].shape, [2, 3]);
        assert_eq!(values(&w, "view"), view, "{name}");
    }
}

/// A copy of fixture `name` edited by `edit`, in a scratch folder of its own (`tag`: tests run
/// in parallel and each scratch folder starts empty).
fn scratch_copy(tag: &str, name: &str, edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let dir = ril_testkit::scratch(&format!("pickle-{tag}"));
    let mut bytes = std::fs::read(fixture(name)).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

/// The first storage's bytes hold BASE[0] (1.5409961 = 0x3fc53f32): changing one of them
/// leaves the zip's CRC wrong, which must be an error when the tensor is read (burn-store's
/// reader returned zeros for such a storage).
#[test]
fn a_corrupt_or_short_storage_is_an_error_not_zeros() {
    let first = BASE[0].to_le_bytes();
    let path = scratch_copy("crc", "tiny_zip.pt", |b| {
        let at = find(b, &first);
        b[at] ^= 1;
    });
    let w = Weights::open(&path, None).unwrap();
    let e = format!("{:#}", w.data("layer.weight").unwrap_err());
    assert!(e.contains("tiny_zip.pt"), "{e}");

    // The legacy file cut inside its last storage.
    let path = scratch_copy("short", "tiny_legacy.pt", |b| b.truncate(b.len() - 3));
    let e = format!("{:#}", Weights::open(&path, None).err().unwrap());
    assert!(
        e.contains("tiny_legacy.pt") && e.contains("more than the file has left"),
        "{e}"
    );
}

/// A storage's declared element count beyond what the tensor's pickle and the file hold, and
/// a pickle that names another class, are refused by name before any data is read.
#[test]
fn other_objects_and_lengths_beyond_the_file_are_refused_by_name() {
    let e = format!(
        "{:#}",
        Weights::open(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../rewards/tests/fixtures/malicious.pt")
                .as_path(),
            None
        )
        .err()
        .unwrap()
    );
    assert!(
        e.contains("malicious.pt") && e.contains("posix.system"),
        "{e}"
    );

    // BINUNICODE 'X' with a length of 0xffffffff in the legacy file's first pickle string.
    let path = scratch_copy("length", "tiny_legacy.pt", |b| {
        let at = find(b, b"X") + 1;
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    });
    let e = format!("{:#}", Weights::open(&path, None).err().unwrap());
    assert!(e.contains("runs past the end of the pickle"), "{e}");
}
