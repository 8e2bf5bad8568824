//! Points the binary at the libpython it was built against.
//!
//! Without an rpath the dynamic loader picks whatever `libpython3.X.so` it finds first
//! (on Debian-based machines often the system one, a different patch release and prefix),
//! and the server then runs with another interpreter than the one it was configured for.
//!
//! The wheel's native module (built by maturin, which sets `PYO3_BUILD_EXTENSION_MODULE`)
//! gets neither the rpath nor the interpreter's path: it runs inside whatever interpreter
//! imports it, on another machine, and a directory of the build machine must not end up in
//! a distributed file.

#[path = "src/python/base_interpreter.rs"]
mod base_interpreter;

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    println!("cargo:rerun-if-env-changed=PYO3_BUILD_EXTENSION_MODULE");
    let extension_module = std::env::var_os("PYO3_BUILD_EXTENSION_MODULE").is_some();
    if !extension_module {
        pyo3_build_config::add_libpython_rpath_link_args();
    }
    let config = pyo3_build_config::get();
    println!(
        "cargo:rustc-env=RGUNICORN_BUILD_PYTHON={}.{}",
        config.version().major,
        config.version().minor
    );
    if let Some(executable) = config.executable().filter(|_| !extension_module) {
        // A virtualenv's interpreter is recorded as its base: see `base_interpreter`.
        let minor = format!("{}.{}", config.version().major, config.version().minor);
        let recorded = base_interpreter::base_interpreter(executable.as_ref(), &minor)
            .unwrap_or_else(|e| panic!("{e}"));
        if recorded.as_path() != std::path::Path::new(executable) {
            println!(
                "cargo:warning=built against {}, the base interpreter of the virtualenv's {executable}",
                recorded.display()
            );
        }
        println!(
            "cargo:rustc-env=RGUNICORN_BUILD_PYTHON_EXE={}",
            recorded.display()
        );
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
