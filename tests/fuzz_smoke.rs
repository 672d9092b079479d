//! The fuzz targets' short variant for `make test`: each target runs over its seed corpus
//! (`fuzz/seeds/<target>/`) and a fixed number of inputs derived from the seeds by a seeded
//! pseudo-random mutator — deterministic, bounded, on the stable toolchain. `make fuzz` runs the
//! same targets under libFuzzer with coverage guidance.

use std::path::PathBuf;

use tokio_php::fuzz;

/// Mutated inputs per target.
const MUTATIONS: usize = 20_000;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes the parsers care about, for insertions.
const INTERESTING: &[&[u8]] = &[
    b"/",
    b"..",
    b"%2e",
    b"%2f",
    b"%00",
    b"%",
    b"\\",
    b"\n",
    b"\r\n",
    b",",
    b";",
    b"q=",
    b"=",
    b"*",
    b"-",
    b":",
    b"[",
    b"]",
    b"@",
    b"~",
    b"#",
    b"?",
    b"$uri",
    b"$args",
    b"00-",
    b"ff",
    b".php",
    b".bak",
    b"\xff",
    b"\xc0\xae",
    b" ",
    b"\t",
    b"0",
    b"9999999999999999999999",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut input = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(4) {
            0 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(at..at, piece.iter().copied());
            }
            1 if !input.is_empty() => {
                let end = (at + rng.below(8)).min(input.len());
                input.drain(at.min(end)..end);
            }
            2 if at < input.len() => input[at] = rng.next() as u8,
            _ => {
                let len = rng.below(16);
                let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                input.splice(at..at, random);
            }
        }
    }
    input
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.sort();
    seeds
}

fn run(target: &str, function: fn(&[u8])) {
    let seeds = seeds(target);
    for seed in &seeds {
        function(seed);
    }
    let mut rng = Rng(0x7f4a_7c15_9e37_79b9 ^ target.len() as u64);
    for _ in 0..MUTATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        function(&input);
    }
}

#[test]
fn routing_never_serves_outside_the_root_nor_a_dotfile_nor_php_source() {
    run("route_path", fuzz::route_path);
}

#[test]
fn request_validation_and_the_sapi_conversion_never_panic() {
    run("request_to_sapi", fuzz::request_to_sapi);
}

#[test]
fn trace_headers_always_yield_a_well_formed_traceparent() {
    run("trace_headers", fuzz::trace_headers);
}

#[test]
fn accept_encoding_prefers_only_an_encoding_with_a_positive_q() {
    run("accept_encoding", fuzz::accept_encoding);
}

#[test]
fn every_config_value_parses_to_a_value_or_a_message() {
    run("config_values", fuzz::config_values);
}
