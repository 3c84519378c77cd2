//! ril's TensorBoard event records against tensorboard's own: the same events (fixed wall
//! times) give the bytes of tools/parity/make_tensorboard_fixture.py's RecordWriter output, and
//! the masked CRC-32C is TFRecord's (the standard check value of CRC-32C).

use rid_trainer::tensorboard::{file_version_event, masked_crc, record, scalars_event};

fn fixture() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tensorboard/events.bin");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn values(v: &[(&str, f32)]) -> Vec<(String, f32)> {
    v.iter().map(|(t, x)| (t.to_string(), *x)).collect()
}

#[test]
fn the_writer_gives_tensorboards_bytes() {
    let rows: [(i64, Vec<(String, f32)>); 3] = [
        (
            0,
            values(&[("aesthetic/loss", -0.5), ("aesthetic/grad_norm", 3.25)]),
        ),
        (
            1,
            values(&[("aesthetic/loss", -0.625), ("aesthetic/reward_mean", 5.125)]),
        ),
        (
            300,
            values(&[("hps/loss", 1e-7), ("hps/distill", 123_456.79)]),
        ),
    ];
    let mut ours = record(&file_version_event(1764763200.25, "brain.Event:2"));
    for (i, (step, v)) in rows.iter().enumerate() {
        ours.extend(record(&scalars_event(1764763201.5 + i as f64, *step, v)));
    }
    let theirs = fixture();
    assert_eq!(ours.len(), theirs.len());
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!("first differing byte at offset {i}");
    }
}

#[test]
fn the_masked_crc_is_tfrecords() {
    // CRC-32C("123456789") = 0xE3069283 (the catalogue's check value), masked as TFRecord does:
    // rotate right by 15, add 0xA282EAD8.
    let crc: u32 = 0xE306_9283;
    assert_eq!(
        masked_crc(b"123456789"),
        crc.rotate_right(15).wrapping_add(0xa282_ead8)
    );
    // The fixture's first record: its length's masked CRC sits right after the length.
    let f = fixture();
    assert_eq!(
        masked_crc(&f[..8]),
        u32::from_le_bytes(f[8..12].try_into().unwrap())
    );
}
