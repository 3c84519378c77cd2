//! Times the symmetric eigen-decomposition FID needs (2048x2048):
//! `cargo run --release -p ril-metrics --example eig_time`.
fn main() {
    let n = 2048;
    let x = nalgebra::DMatrix::<f64>::from_fn(n, 64, |i, j| ((i * 31 + j * 17) % 97) as f64 / 97.0);
    let s = &x * x.transpose();
    let t = std::time::Instant::now();
    let e = nalgebra::SymmetricEigen::new(s);
    println!(
        "nalgebra SymmetricEigen {n}x{n}: {:.1} s (sum {:.3})",
        t.elapsed().as_secs_f64(),
        e.eigenvalues.sum()
    );
}
