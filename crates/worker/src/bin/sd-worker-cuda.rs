//! `sd-worker-cuda`: the worker built with the `cuda` feature; the same program
//! as `sd-worker-cpu`, running on the GPU given by `--device`.

#[path = "../main.rs"]
mod worker_main;

fn main() {
    worker_main::main()
}
