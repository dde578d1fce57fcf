//! Prints the final state of one seed: `cargo run -p kasane-sim-net --example probe -- NODES BYZANTINE SEED`.
fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("number")).collect();
    let (nodes, byzantine, seed) = (args[0] as usize, args[1] as usize, args[2]);
    let config = kasane_sim_net::SimConfig::random(seed, nodes, byzantine);
    let report = kasane_sim_net::run(seed, &config);
    println!("violations {:?}", report.violations);
    println!("faults {:?}", config.faults);
    println!("behaviours {:?}", config.behaviours);
    for state in &report.final_states {
        println!("{state}");
    }
    println!("dropped {:?}", report.dropped);
}
