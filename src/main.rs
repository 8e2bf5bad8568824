//! `rgunicorn [OPTIONS] [APP_MODULE]`: everything happens in the library; this only hands
//! over the arguments and exits with the status it gets back.

fn main() {
    // Before any thread starts or the environment changes: find the argv area for titles.
    rgunicorn::unix::proctitle::init();
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(rgunicorn::run(&args));
}
