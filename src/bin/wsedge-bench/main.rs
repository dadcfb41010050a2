//! `wsedge-bench`: the load generator. Runs in its own process (a process here may hold at most
//! 20,000 files) and reads the server's memory and CPU from `/proc/PID`.
//!
//! Scenarios: `density` (idle connections and RSS per connection), `handshake`, `echo`,
//! `fanout`, `churn`, `hold`, `recover-storm`, `reconnect-storm`, `forward` (mio-driven, one thread: the generator never blocks on one client).

mod density;
mod engine;
mod forward;
mod hold;
mod proc_stats;
mod publisher;
mod reconnect;
mod restart;
mod scenarios;
mod storm;
mod tls;
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
    /// Connect, upgrade, first message, close: handshakes per second and latency.
    Handshake(scenarios::HandshakeArgs),
    /// Request/response on C connections: messages per second and latency percentiles.
    Echo(scenarios::EchoArgs),
    /// N subscribers, M published messages: deliveries per second, latency, loss.
    Fanout(scenarios::FanoutArgs),
    /// Connections opened and closed continuously; RSS and open files must come back.
    Churn(scenarios::ChurnArgs),
    /// Hold N idle connections, then wait for one message on each (scripts/million.sh).
    Hold(hold::Args),
    /// N clients come back at once and each recovers M missed messages of one event.
    RecoverStorm(storm::Args),
    /// Hold N connections and make handshakes at a steady rate through a restart.
    RestartStream(restart::Args),
    /// N clients reconnect with full-jitter backoff while the server restarts: attempts over time.
    ReconnectStorm(reconnect::Args),
    /// C clients' messages forwarded by the backend bridge, measured at a sink backend.
    Forward(forward::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Density(a) => density::run(a),
        Scenario::Handshake(a) => scenarios::handshake(a),
        Scenario::Echo(a) => scenarios::echo(a),
        Scenario::Fanout(a) => scenarios::fanout(a),
        Scenario::Churn(a) => scenarios::churn(a),
        Scenario::Hold(a) => hold::run(a),
        Scenario::RecoverStorm(a) => storm::run(a),
        Scenario::RestartStream(a) => restart::run(a),
        Scenario::ReconnectStorm(a) => reconnect::run(a),
        Scenario::Forward(a) => forward::run(a),
    };
    if let Err(e) = result {
        eprintln!("wsedge-bench: {e}");
        std::process::exit(1);
    }
}
