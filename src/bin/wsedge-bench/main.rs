//! `wsedge-bench`: the load generator. Runs in its own process (a process here may hold at most
//! 20,000 files) and reads the server's memory and CPU from `/proc/PID`.
//!
//! Scenarios: `density` (idle connections and RSS per connection).

mod density;
mod proc_stats;
mod wire;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "wsedge-bench", about = "Load generator for wsedge and peer servers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N idle connections and report the server's RSS growth per connection.
    Density(density::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Density(a) => density::run(a),
    };
    if let Err(e) = result {
        eprintln!("wsedge-bench: {e}");
        std::process::exit(1);
    }
}
