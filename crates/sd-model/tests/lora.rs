//! The LoRA adapter group on the UNet, against peft/diffusers: files trained with peft load and
//! reproduce diffusers' outputs, ril's export has the same keys, shapes and values, a new task
//! starts at the previous model, only the newest pair trains, merge/unmerge, model soup, and bad
//! files are refused by name.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn_store::ModuleSnapshot;
use common::{
    AD, B, RawEntry, assert_close, fixture, read_raw, reference, scratch, values, write_raw,
};
use lora_group::{LoraModel, Targets, export_task, import_task, merge, push_task, soup, unmerge};
use sd_model::UNet2DConditionModel;
use sd_model::pipeline::load_unet;

fn lora(name: &str) -> std::path::PathBuf {
    fixture(&format!("lora/{name}"))
}

/// The UNet output on the parity inputs of reference/unet.safetensors.
fn forward<Bk: Backend>(unet: &UNet2DConditionModel<Bk>) -> Tensor<Bk, 4> {
    let r = reference("unet");
    let device = Default::default();
    let t: Vec<f32> = r
        .read_i64("timestep")
        .unwrap()
        .iter()
        .map(|&t| t as f32)
        .collect();
    unet.forward(
        r.tensor("sample", &device).unwrap(),
        Tensor::from_data(TensorData::new(t, [2]), &device),
        r.tensor("encoder_hidden_states", &device).unwrap(),
    )
}

fn unet<Bk: Backend>() -> UNet2DConditionModel<Bk> {
    load_unet(&fixture("tiny-sd/unet"), &Default::default()).unwrap()
}

#[test]
fn peft_files_reproduce_diffusers_outputs_alone_and_stacked() {
    let r = reference_lora();
    let mut model = unet::<B>();
    let info = import_task(&mut model, &lora("a_r4.safetensors"), "unet").unwrap();
    assert_eq!(
        (info.layers, info.rank, info.alpha, info.task),
        (128, 4, 4.0, 0)
    );
    // diffusers computes the same sums in another order: f32 tolerance as the parity tests.
    assert_close(
        "out_a",
        &values(forward(&model)),
        &r.read_f32("out_a").unwrap(),
        1e-4,
        1e-5,
    );
    let info = import_task(&mut model, &lora("b_r2_alpha8.safetensors"), "unet").unwrap();
    assert_eq!(
        (info.layers, info.rank, info.alpha, info.task),
        (64, 2, 8.0, 1)
    );
    assert_close(
        "out_ab",
        &values(forward(&model)),
        &r.read_f32("out_ab").unwrap(),
        1e-4,
        1e-5,
    );
    let mut only_b = unet::<B>();
    import_task(&mut only_b, &lora("b_r2_alpha8.safetensors"), "unet").unwrap();
    assert_close(
        "out_b",
        &values(forward(&only_b)),
        &r.read_f32("out_b").unwrap(),
        1e-4,
        1e-5,
    );
}

fn reference_lora() -> sd_model::load::SafetensorsFile {
    sd_model::load::SafetensorsFile::open(&lora("reference.safetensors")).unwrap()
}

#[test]
fn export_has_the_peft_key_set_shapes_and_values() {
    let dir = scratch("lora-export");
    let mut model = unet::<B>();
    import_task(&mut model, &lora("a_r4.safetensors"), "unet").unwrap();
    let out = dir.join("task0.safetensors");
    let info = export_task(&model, 0, "unet", &out).unwrap();
    assert_eq!((info.layers, info.rank, info.alpha), (128, 4, 4.0));
    let theirs = read_raw(&lora("a_r4.safetensors"));
    let ours = read_raw(&out);
    let names = |v: &[RawEntry]| v.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&theirs));
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!((o.dtype, &o.shape), (t.dtype, &t.shape), "{}", o.name);
        assert!(o.bytes == t.bytes, "{}: values differ", o.name);
    }
    // The exported file loads back as the same task.
    let mut again = unet::<B>();
    let back = import_task(&mut again, &out, "unet").unwrap();
    assert_eq!((back.rank, back.alpha), (4, 4.0));
    assert_eq!(values(forward(&again)), values(forward(&model)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rils_lora_files_carry_a_checksum_that_refuses_a_flipped_bit() {
    let dir = scratch("lora-checksum");
    let mut model = unet::<B>();
    import_task(&mut model, &lora("a_r4.safetensors"), "unet").unwrap();
    let out = dir.join("task0.safetensors");
    export_task(&model, 0, "unet", &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta[lora_group::checksum::KEY].len(), 64, "{meta:?}");
    // One bit of the last value (the data section) flipped: refused, naming the file.
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let bad = dir.join("flipped.safetensors");
    std::fs::write(&bad, &flipped).unwrap();
    let err = format!(
        "{:#}",
        import_task(&mut unet::<B>(), &bad, "unet").unwrap_err()
    );
    assert!(
        err.contains("flipped.safetensors")
            && err.contains("corrupt")
            && err.contains("ril_sha256"),
        "{err}"
    );
    // The kohya layout carries it too.
    let file = lora_group::io::read_lora(&out, "unet").unwrap();
    let kohya = dir.join("kohya.safetensors");
    lora_group::kohya::write(
        &file,
        &kohya,
        &BTreeMap::new(),
        lora_group::io::FileDtype::F16,
    )
    .unwrap();
    let mut layers = Vec::new();
    model.visit_lora(&mut |p, _| layers.push(p.to_string()));
    lora_group::kohya::read(&kohya, &layers).unwrap();
    let mut k = std::fs::read(&kohya).unwrap();
    let n = k.len();
    k[n - 3] ^= 0x10;
    std::fs::write(&kohya, &k).unwrap();
    let err = format!(
        "{:#}",
        lora_group::kohya::read(&kohya, &layers).unwrap_err()
    );
    assert!(
        err.contains("kohya.safetensors") && err.contains("corrupt"),
        "{err}"
    );
    // Metadata edited by another tool (the tensors unchanged) still loads, and so does a file
    // from another tool without the entry (the peft fixture has none).
    let edited = dir.join("edited.safetensors");
    rewrite_metadata(
        &out,
        &edited,
        "\"unet.bias\":\"none\"",
        "\"unet.bias\": \"none\"",
    );
    import_task(&mut unet::<B>(), &edited, "unet").unwrap();
    let fixture_bytes = std::fs::read(lora("a_r4.safetensors")).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&fixture_bytes).unwrap();
    assert!(
        !m.metadata()
            .clone()
            .unwrap_or_default()
            .contains_key("ril_sha256")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_new_task_starts_exactly_at_the_previous_model() {
    let mut model = unet::<B>();
    import_task(&mut model, &lora("a_r4.safetensors"), "unet").unwrap();
    let before = values(forward(&model));
    let (task, layers) = push_task(&mut model, &Targets::default(), 4, 4.0).unwrap();
    assert_eq!((task, layers), (1, 128));
    // lora_B of the new pair is zero, so every output is bit-for-bit the previous one.
    assert_eq!(values(forward(&model)), before);
}

fn snapshot<Bk: Backend, M: ModuleSnapshot<Bk>>(m: &M) -> BTreeMap<String, Vec<f32>> {
    m.collect(None, None, false)
        .into_iter()
        .map(|s| {
            (
                s.full_path(),
                s.to_data().unwrap().convert::<f32>().into_vec().unwrap(),
            )
        })
        .collect()
}

#[test]
fn only_the_newest_pair_changes_after_a_backward_pass_and_an_optimiser_step() {
    let mut model = unet::<AD>();
    import_task(&mut model, &lora("a_r4.safetensors"), "unet").unwrap();
    push_task(&mut model, &Targets::default(), 4, 4.0).unwrap();
    let before = snapshot(&model);
    let loss = forward(&model).powf_scalar(2.0).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.01)
        .init::<AD, UNet2DConditionModel<AD>>();
    let model = optim.step(1e-3, model, grads);
    let after = snapshot(&model);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let mut changed = 0;
    for (k, v) in &before {
        // Task 1's pairs sit at index 1 of each adapted layer's `lora` list.
        let newest = k.contains(".lora.1.");
        if newest && k.ends_with("lora_B") {
            assert!(&after[k] != v, "{k} did not change");
            changed += 1;
        } else if !newest {
            assert!(&after[k] == v, "{k} changed but is frozen");
        }
    }
    assert_eq!(changed, 128);
}

#[test]
fn merge_equals_unmerged_and_unmerge_restores_the_weights() {
    let r = reference_lora();
    let mut model = unet::<B>();
    let base_q = values(
        model.down_blocks[0].attentions[0].transformer_blocks[0]
            .attn1
            .to_q
            .base
            .weight
            .val(),
    );
    import_task(&mut model, &lora("a_r4.safetensors"), "unet").unwrap();
    import_task(&mut model, &lora("b_r2_alpha8.safetensors"), "unet").unwrap();
    let unmerged = values(forward(&model));
    merge(&mut model);
    // Folding changes only the order of f32 sums: the issue's bound of 1e-5.
    assert_close("merged", &values(forward(&model)), &unmerged, 0.0, 1e-5);
    unmerge(&mut model);
    let q = values(
        model.down_blocks[0].attentions[0].transformer_blocks[0]
            .attn1
            .to_q
            .base
            .weight
            .val(),
    );
    assert_close("unmerged weight", &q, &base_q, 1e-6, 1e-7);
    assert_close(
        "unmerged out",
        &values(forward(&model)),
        &unmerged,
        0.0,
        1e-6,
    );
    // diffusers' fused weight of adapter a for one layer ([out, in]; Burn stores [in, out]).
    let mut only_a = unet::<B>();
    import_task(&mut only_a, &lora("a_r4.safetensors"), "unet").unwrap();
    merge(&mut only_a);
    let fused = only_a.down_blocks[0].attentions[0].transformer_blocks[0]
        .attn1
        .to_q
        .base
        .weight
        .val();
    assert_close(
        "fused to_q",
        &values(fused.transpose()),
        &r.read_f32("merged_to_q").unwrap(),
        1e-6,
        1e-7,
    );
}

#[test]
fn soup_averages_merged_updates_and_checks_coefficients() {
    let r = reference_lora();
    let mut a = unet::<B>();
    import_task(&mut a, &lora("a_r4.safetensors"), "unet").unwrap();
    let mut b = unet::<B>();
    import_task(&mut b, &lora("b_r2_alpha8.safetensors"), "unet").unwrap();
    // Coefficients (1, 0) give model a itself.
    let mut target = unet::<B>();
    soup(&mut target, &[&a, &b], &[1.0, 0.0]).unwrap();
    assert_close(
        "soup(1, 0)",
        &values(forward(&target)),
        &r.read_f32("out_a").unwrap(),
        1e-4,
        1e-5,
    );
    // (1/2, 1/2): every layer's weight is W + (Δa + Δb) / 2.
    let mut half = unet::<B>();
    soup(&mut half, &[&a, &b], &[0.5, 0.5]).unwrap();
    let mut deltas = BTreeMap::new();
    for m in [&a, &b] {
        m.visit_lora(&mut |p, l| {
            if let Some(d) = l.delta() {
                let v = values(d);
                let e = deltas.entry(p.to_string()).or_insert(vec![0.0f32; v.len()]);
                e.iter_mut().zip(v).for_each(|(x, y)| *x += 0.5 * y);
            }
        });
    }
    let base = unet::<B>();
    let mut bases = BTreeMap::new();
    base.visit_lora(&mut |p, l| {
        bases.insert(p.to_string(), values(l.base.weight.val()));
    });
    half.visit_lora(&mut |p, l| {
        assert!(l.lora.is_empty() && !l.merged);
        let got = values(l.base.weight.val());
        let expected: Vec<f32> = match deltas.get(p) {
            Some(d) => bases[p].iter().zip(d).map(|(w, d)| w + d).collect(),
            None => bases[p].clone(),
        };
        assert_close(p, &got, &expected, 1e-6, 1e-7);
    });
    let mut t = unet::<B>();
    let err = soup(&mut t, &[&a, &b], &[0.5, 0.6])
        .unwrap_err()
        .to_string();
    assert!(err.contains("sum to 1.1"), "{err}");
    let err = soup(&mut t, &[&a], &[0.5, 0.5]).unwrap_err().to_string();
    assert!(
        err.contains("sum to") || err.contains("coefficients"),
        "{err}"
    );
}

/// A copy of a_r4 altered by `edit`, imported into a fresh UNet; returns the error.
fn import_error(
    name: &str,
    edit: impl FnOnce(&mut Vec<RawEntry>),
    metadata: Option<(&str, &str)>,
) -> String {
    let dir = scratch(name);
    let mut entries = read_raw(&lora("a_r4.safetensors"));
    edit(&mut entries);
    let path = dir.join("bad.safetensors");
    write_raw(&path, &entries);
    if let Some((from, to)) = metadata {
        rewrite_metadata(&lora("a_r4.safetensors"), &path, from, to);
    }
    let mut model = unet::<B>();
    let err = import_task(&mut model, &path, "unet").unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    format!("{err:#}")
}

/// Writes `src`'s tensors with its metadata, in which `from` is replaced by `to`.
fn rewrite_metadata(src: &Path, dst: &Path, from: &str, to: &str) {
    let bytes = std::fs::read(src).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut m = meta.metadata().clone().unwrap();
    let text = m["lora_adapter_metadata"].replace(from, to);
    assert_ne!(
        text, m["lora_adapter_metadata"],
        "{from} not in the metadata"
    );
    m.insert("lora_adapter_metadata".into(), text);
    let entries = read_raw(src);
    let views: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                safetensors::tensor::TensorView::new(e.dtype, e.shape.clone(), &e.bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, Some(m), dst).unwrap();
}

#[test]
fn a_lora_file_with_a_non_finite_weight_is_refused_by_key() {
    // A NaN pair would make every image black with exit 0.
    let key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight";
    let err = import_error(
        "lora-nan",
        |e| {
            let t = e.iter_mut().find(|t| t.name == key).unwrap();
            assert_eq!(t.dtype, safetensors::Dtype::F32);
            t.bytes[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        },
        None,
    );
    assert!(
        err.contains("bad.safetensors")
            && err.contains(&format!(
                "key `{key}` holds a non-finite value (NaN) at flat index 0"
            )),
        "{err}"
    );
}

#[test]
fn bad_lora_files_and_targets_are_refused_by_name() {
    let key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight";
    let err = import_error(
        "lora-nolayer",
        |e| {
            for half in ["lora_A", "lora_B"] {
                let key = format!(
                    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.{half}.weight"
                );
                let mut x = e.iter().find(|t| t.name == key).unwrap().clone();
                x.name = key.replace("attn1", "attn9");
                e.push(x);
            }
        },
        None,
    );
    assert!(err.contains("`unet.down_blocks.0.attentions.0.transformer_blocks.0.attn9.to_q.lora_A.weight` matches no layer"), "{err}");
    let err = import_error(
        "lora-shape",
        |e| {
            let x = e.iter_mut().find(|x| x.name == key).unwrap();
            x.shape = vec![4, 16];
            x.bytes = [x.bytes.clone(), x.bytes.clone()].concat();
        },
        None,
    );
    assert!(
        err.contains(key) && err.contains("[4, 16]") && err.contains("[r, 8]"),
        "{err}"
    );
    let err = import_error(
        "lora-rank",
        |_| {},
        Some(("\"unet.r\": 4", "\"unet.r\": 8")),
    );
    assert!(
        err.contains("attn1.to_k.lora_A.weight` has rank 4, the file's metadata says r = 8"),
        "{err}"
    );
    let err = import_error(
        "lora-half",
        |e| e.retain(|t| !t.name.ends_with("attn1.to_q.lora_B.weight")),
        None,
    );
    assert!(err.contains("has only one of lora_A / lora_B"), "{err}");
    let mut model = unet::<B>();
    let err = push_task(
        &mut model,
        &Targets::pattern("no_such_layer").unwrap(),
        4,
        4.0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no_such_layer") && err.contains("matches no layer"),
        "{err}"
    );
    // The tiny UNet's narrowest adapted layers (the first block's attention, 8 channels) bound
    // the rank: 8 is accepted, 9 (and a huge rank, before any allocation) refused by layer.
    for rank in [9, 1 << 40] {
        let err = push_task(&mut unet::<B>(), &Targets::default(), rank, 4.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("LoRA rank {rank}")) && err.contains("min(in, out) = 8"),
            "{err}"
        );
    }
    push_task(&mut unet::<B>(), &Targets::default(), 8, 4.0).unwrap();
    let err = import_task(&mut model, Path::new("/nonexistent/l.safetensors"), "unet").unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent/l.safetensors"));
    let _ = model.num_params();
}

#[test]
fn soup_file_holds_exactly_the_weighted_sum_of_updates() {
    let dir = scratch("lora-soup");
    let out = dir.join("soup.safetensors");
    let files = vec![
        (lora("a_r4.safetensors"), 0.25),
        (lora("b_r2_alpha8.safetensors"), 0.75),
    ];
    let info = lora_group::soup_files(&files, "unet", &out).unwrap();
    // a adapts 128 layers with rank 4; b adds rank 2 on 64 of them.
    assert_eq!((info.layers, info.rank), (128, 6));
    let mut from_file = unet::<B>();
    import_task(&mut from_file, &out, "unet").unwrap();
    let mut a = unet::<B>();
    import_task(&mut a, &lora("a_r4.safetensors"), "unet").unwrap();
    let mut b = unet::<B>();
    import_task(&mut b, &lora("b_r2_alpha8.safetensors"), "unet").unwrap();
    let mut merged = unet::<B>();
    soup(&mut merged, &[&a, &b], &[0.25, 0.75]).unwrap();
    // The same update, as low-rank pairs or folded into W: f32 summation order only.
    assert_close(
        "soup file",
        &values(forward(&from_file)),
        &values(forward(&merged)),
        0.0,
        1e-5,
    );
    let bad = vec![
        (lora("a_r4.safetensors"), 0.5),
        (lora("b_r2_alpha8.safetensors"), 0.6),
    ];
    let err = lora_group::soup_files(&bad, "unet", &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sum to 1.1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn conv_1x1_projections_take_pairs_exported_in_peft_conv_layout() {
    let dir = scratch("lora-conv");
    let mut model = unet::<B>();
    let (task, layers) = push_task(
        &mut model,
        &Targets::pattern(r".*\.proj_(in|out)").unwrap(),
        2,
        4.0,
    )
    .unwrap();
    // 16 transformers (3 + 3 + 9 up + 1 mid) x (proj_in, proj_out).
    assert_eq!((task, layers), (0, 32));
    let base = values(forward(&model));
    let mut rng = sd_model::noise::NoiseRng::new(3);
    model.visit_lora_mut(&mut |_, l| {
        for p in &mut l.lora {
            let [o, r] = p.lora_B.val().dims();
            p.lora_B = burn::module::Param::from_tensor(
                rng.tensor::<B, 2>([o, r], &Default::default()) * 0.1,
            );
        }
    });
    let adapted = values(forward(&model));
    assert!(
        adapted.iter().zip(&base).any(|(a, b)| (a - b).abs() > 1e-3),
        "the pairs change the output"
    );
    let out = dir.join("conv.safetensors");
    export_task(&model, 0, "unet", &out).unwrap();
    let entries = read_raw(&out);
    let a = entries
        .iter()
        .find(|e| e.name == "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight")
        .unwrap();
    let b = entries
        .iter()
        .find(|e| e.name == "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight")
        .unwrap();
    assert_eq!(
        (a.shape.clone(), b.shape.clone()),
        (vec![2, 8, 1, 1], vec![8, 2, 1, 1])
    );
    let mut again = unet::<B>();
    import_task(&mut again, &out, "unet").unwrap();
    assert_eq!(values(forward(&again)), adapted);
    std::fs::remove_dir_all(&dir).unwrap();
}
