//! Points the binary at the libpython it was built against.
//!
//! Without an rpath the dynamic loader picks whatever `libpython3.X.so` it finds first
//! (on Debian-based machines often the system one, a different patch release and prefix),
//! and the server then runs with another interpreter than the one it was configured for.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    println!(
        "cargo:rustc-env=RGUNICORN_BUILD_PYTHON={}.{}",
        config.version().major,
        config.version().minor
    );
    if let Some(executable) = config.executable() {
        println!("cargo:rustc-env=RGUNICORN_BUILD_PYTHON_EXE={executable}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
