//! Gradient checkpointing (`Frozen::checkpointing`) gives the same loss, rewards and gradients as
//! the step with its whole graph, and holds less memory at its peak: on the tiny pipeline with
//! a 256x256 image, where the last UNet step's, the decode's and the reward's graphs are each a
//! large part of the whole (peak heap counted by `ril_testkit::alloc`; the counts are of Rust
//! allocations, so on LibTorch, whose tensors are C++ allocations, only the gradients are
//! compared).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{AutodiffModule, Module, Param};
use burn::prelude::*;
use lora_group::{LoraModel, Targets, push_task};
use rewards::Reward;
use rewards::jpeg::Compressibility;
use rid_trainer::step::{Frozen, MicroBatch, Objective, step_gradients};
use rid_trainer::update::task_pairs;
use ril_testkit::alloc::{Counting, exclusive, peak_during};
use sd_model::noise::NoiseRng;
use sd_model::{Conditioning, DdimConfig, DdimScheduler, StableDiffusion, UNet2DConditionModel};

#[cfg(not(feature = "tch"))]
type AD = sd_model::backend::CpuAutodiff;
#[cfg(feature = "tch")]
type AD = sd_model::backend::TchAutodiff;
type B = <AD as burn::tensor::backend::AutodiffBackend>::InnerBackend;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Setup {
    sd: StableDiffusion<AD>,
    student: UNet2DConditionModel<AD>,
    teacher: UNet2DConditionModel<B>,
    scheduler: DdimScheduler,
    cond: Conditioning<B>,
    z_n: Tensor<B, 4>,
}

/// The tiny pipeline with a task pair whose `lora_B` is not zero (so every pair gets a
/// gradient), a teacher that differs from it (so RID's term has one too), 2 DDIM steps and
/// one 32x32 latent.
fn setup() -> Setup {
    let device = Default::default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sd = StableDiffusion::<AD>::load(
        &root.join("crates/sd-model/tests/fixtures/tiny-sd"),
        &device,
    )
    .unwrap();
    let mut student = sd.unet.clone().no_grad();
    let (task, _) = push_task(&mut student, &Targets::default(), 4, 4.0).unwrap();
    let teacher = student.valid();
    let mut rng = NoiseRng::new(11);
    student.visit_lora_mut(&mut |_, l| {
        for p in l.lora.iter_mut().filter(|p| p.task == task) {
            let [o, r] = p.lora_B.val().dims();
            let v = rng.tensor::<B, 2>([o, r], &device) * 0.3;
            p.lora_B = Param::initialized(p.lora_B.id, Tensor::from_inner(v).require_grad());
            let a = p.lora_A.val().inner();
            p.lora_A = Param::initialized(p.lora_A.id, Tensor::from_inner(a).require_grad());
        }
    });
    let context = sd
        .encode_prompts(&["".into(), "a red apple".into()], &device)
        .unwrap()
        .inner();
    Setup {
        scheduler: DdimScheduler::new(DdimConfig::sd15(), 2).unwrap(),
        cond: Conditioning {
            context,
            scale: 7.5,
        },
        z_n: NoiseRng::new(3).tensor([1, 4, 32, 32], &device),
        student,
        teacher,
        sd,
    }
}

/// Loss, rewards and the task pair's gradients by name, and the peak heap of the step.
type Outcome = (f64, Vec<f32>, BTreeMap<String, Vec<f32>>, usize);

fn run(s: &Setup, objective: Objective, checkpointing: bool) -> Outcome {
    let vae = s.sd.vae.clone().no_grad();
    let reward = Compressibility::default();
    let frozen = Frozen {
        vae: &vae,
        reward: &reward as &dyn Reward<AD>,
        scheduler: &s.scheduler,
        eta: 0.0,
        checkpointing,
    };
    let batch = MicroBatch {
        cond: s.cond.clone(),
        z_n: s.z_n.clone(),
        prompts: vec!["a red apple".into()],
        noise_seed: 0,
    };
    let (peak, out) = peak_during(|| {
        let out = step_gradients(&s.student, &s.teacher, objective, &frozen, batch).unwrap();
        let grads: BTreeMap<String, Vec<f32>> = task_pairs(&s.student, 0)
            .into_iter()
            .map(|(name, p)| {
                let g = p.grad(&out.grads).expect("every pair has a gradient");
                (name, ril_testkit::values(g))
            })
            .collect();
        (out.loss, out.rewards, grads)
    });
    (out.0, out.1, out.2, peak)
}

/// The peak heap of each differentiated segment alone (forward with a graph from its input,
/// backward of Σ output): the last UNet step, the decode and the reward.
fn segment_peaks(s: &Setup) -> [usize; 3] {
    let device = Default::default();
    let vae = s.sd.vae.clone().no_grad();
    let z1 = NoiseRng::new(5).tensor::<B, 4>([1, 4, 32, 32], &device);
    let image = vae.valid().decode_latents(z1.clone());
    let unet = peak_during(|| {
        let cond = s.cond.clone().map(Tensor::<AD, 3>::from_inner);
        let z0 = sd_model::denoise(
            &s.student,
            &s.scheduler,
            &cond,
            Tensor::from_inner(z1.clone()),
            1..2,
            0.0,
            &mut NoiseRng::new(0),
            |_| {},
        );
        drop(z0.sum().backward());
    })
    .0;
    let decode = peak_during(|| {
        let z = Tensor::<AD, 4>::from_inner(z1.clone()).require_grad();
        let grads = vae.decode_latents(z.clone()).sum().backward();
        assert!(z.grad(&grads).is_some());
    })
    .0;
    let reward = peak_during(|| {
        let x = Tensor::<AD, 4>::from_inner(image).require_grad();
        let r = Compressibility::default().score(x.clone(), &["a red apple".into()]);
        let grads = r.unwrap().sum().backward();
        assert!(x.grad(&grads).is_some());
    })
    .0;
    [unet, decode, reward]
}

#[test]
fn checkpointing_gives_the_same_gradients_with_less_memory() {
    let _turn = exclusive();
    let s = setup();
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let segments = segment_peaks(&s);
    let largest = segments.into_iter().max().unwrap();
    eprintln!(
        "segments alone (last step, decode, reward): {:.1}, {:.1}, {:.1} MiB",
        mib(segments[0]),
        mib(segments[1]),
        mib(segments[2])
    );
    for objective in [Objective::Baseline, Objective::Rid { lambda: 0.1 }] {
        let whole = run(&s, objective, false);
        let ckpt = run(&s, objective, true);
        eprintln!(
            "{objective:?}: peak heap {:.1} MiB with the whole graph, {:.1} MiB checkpointed",
            mib(whole.3),
            mib(ckpt.3)
        );
        // The same ops on the same values in the same order (the forward runs the autodiff
        // backend's ops untracked, and Σ output ∘ g passes g on exactly): the same bits.
        assert_eq!(ckpt.0.to_bits(), whole.0.to_bits(), "{objective:?}: loss");
        assert_eq!(ckpt.1, whole.1, "{objective:?}: rewards");
        assert_eq!(ckpt.2.len(), whole.2.len());
        let nonzero = whole.2.values().flatten().filter(|g| **g != 0.0).count();
        assert!(nonzero > 0, "{objective:?}: every gradient is zero");
        for (name, g) in &whole.2 {
            assert_eq!(&ckpt.2[name], g, "{objective:?}: gradient of {name}");
        }
        // Checkpointed, the step holds one segment's graph at a time: its peak is the largest
        // segment's, plus the boundaries it keeps (a 32x32 latent and a 256x256 image, under
        // 1 MiB) and the teacher's graph-free step for RID (under 1 MiB at these shapes);
        // 2 MiB covers them. With the whole graph, the last step's graph is still held while
        // the decode's backward runs, so its peak is higher.
        #[cfg(not(feature = "tch"))]
        {
            assert!(
                ckpt.3 <= largest + (2 << 20),
                "{objective:?}: checkpointed peak {:.1} MiB, largest segment {:.1} MiB",
                mib(ckpt.3),
                mib(largest)
            );
            assert!(
                ckpt.3 < whole.3,
                "{objective:?}: checkpointed peak {:.1} MiB, whole graph {:.1} MiB",
                mib(ckpt.3),
                mib(whole.3)
            );
        }
    }
}
