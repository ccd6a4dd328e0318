//! `sd-worker-metal`: the worker built with the `metal` feature; the same program
//! as `sd-worker-cpu`, running on the GPU given by `--device`.

#[path = "../main.rs"]
mod worker_main;

fn main() {
    worker_main::main()
}
