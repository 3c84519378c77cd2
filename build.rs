//! With the `tch` feature, the `ril` binary records where the libtorch it links lives (an rpath
//! to the `torch/lib` folder torch-sys built against, which torch-sys reports to its direct
//! dependents as `DEP_TCH_LIBTORCH_LIB`), so that it starts without `LD_LIBRARY_PATH`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let Some(dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=torch-sys reported no libtorch folder: the binary needs LD_LIBRARY_PATH"
        );
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    // Only the executables: the library is linked again by whatever uses it.
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", dir.display());
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", dir.display());
    // torch-sys links libtorch_cuda, but nothing in the binary calls into it directly, so the
    // linker's default --as-needed would drop it and libtorch would then see no CUDA device
    // (`tch::Cuda::is_available()` false on a GPU machine). Keep it needed when the wheel has it.
    if dir.join("libtorch_cuda.so").exists() {
        for kind in ["bins", "tests"] {
            println!("cargo:rustc-link-arg-{kind}=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
