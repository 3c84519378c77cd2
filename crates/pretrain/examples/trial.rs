//! Timing trial (not committed).
use anyhow::Result;
use image::{Rgb, RgbImage};
use pretrain::{Example, PretrainConfig, RunOptions, Source};
use sd_model::noise::NoiseRng;

struct Squares;
impl Source for Squares {
    fn describe(&self) -> String {
        "sq".into()
    }
    fn len(&self) -> Option<u64> {
        None
    }
    fn get(&self, index: u64) -> Result<Example> {
        let mut rng = NoiseRng::derive(5, &[index]);
        let c = [[220u8, 30, 30], [30, 200, 40], [30, 40, 220]][(rng.next_u64() % 3) as usize];
        let left = rng.next_u64() % 2 == 0;
        let mut image = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
        let x0 = if left { 4 } else { 36 };
        for y in 20..44 {
            for x in x0..x0 + 24 {
                image.put_pixel(x, y, Rgb(c));
            }
        }
        Ok(Example {
            image,
            caption: format!("a square on the {}", if left { "left" } else { "right" }),
        })
    }
}

fn main() -> Result<()> {
    let path = std::env::args().nth(1).unwrap();
    let out = std::env::args().nth(2).unwrap();
    let config = PretrainConfig::from_file(std::path::Path::new(&path))?;
    let s = pretrain::run::<sd_model::backend::CpuAutodiff>(
        &config,
        &Squares,
        std::path::Path::new(&out),
        &RunOptions::default(),
        &Default::default(),
    )?;
    println!("{s:?}");
    Ok(())
}
