//! `rgunicorn [OPTIONS] [APP_MODULE]`: everything happens in the library; this only hands
//! over the arguments and exits with the status it gets back.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(rgunicorn::run(&args));
}
