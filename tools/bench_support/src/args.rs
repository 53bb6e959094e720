//! Argument helpers on clap derive: value parsers for counts and core lists,
//! and the flag groups several tools share (`--server*`, `--redis`).

use std::path::PathBuf;
use std::str::FromStr;

/// A number above zero (`--repeat`, `--duration`, a count in a list).
pub fn positive<T>(v: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Default,
    T::Err: std::fmt::Display,
{
    let n: T = v.trim().parse().map_err(|e| format!("{e}"))?;
    if n > T::default() {
        Ok(n)
    } else {
        Err("must be > 0".into())
    }
}

/// A `taskset -c` core list: numbers and ranges, comma-separated (`0`,
/// `0,1`, `0-3`), each core on this machine.
pub fn cores(v: &str) -> Result<String, String> {
    let online = std::thread::available_parallelism().map_or(1, usize::from);
    let total = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .rsplit(['-', ','])
                .next()
                .and_then(|n| n.parse::<usize>().ok())
        })
        .map_or(online, |last| last + 1);
    let bad = || "a core list such as 0 or 0,1 or 0-3".to_string();
    for part in v.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (
            lo.trim().parse().map_err(|_| bad())?,
            hi.trim().parse().map_err(|_| bad())?,
        );
        if lo > hi {
            return Err(bad());
        }
        if hi >= total {
            return Err(format!(
                "core {hi} is not on this machine (cores 0-{})",
                total - 1
            ));
        }
    }
    Ok(v.replace(' ', ""))
}

/// The server under test: `--server`, `--server-cores`, `--server-threads`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// The rt-server binary [default: rt-server beside this binary]
    #[arg(long, value_name = "PATH")]
    pub server: Option<PathBuf>,
    /// The cores the server runs on, a `taskset -c` list (0, 0,1, 0-3); rt-server then runs as many threads unless --server-threads
    #[arg(long, value_name = "LIST", default_value = "0", value_parser = cores)]
    pub server_cores: String,
    /// rt-server's --threads [default: its own, the number of cores it may run on]
    #[arg(long, value_name = "N", value_parser = positive::<usize>)]
    pub server_threads: Option<usize>,
}

impl ServerArgs {
    /// `--server`, or rt-server beside this binary.
    pub fn rt_server(&self) -> PathBuf {
        self.server
            .clone()
            .unwrap_or_else(crate::server::default_rt_server)
    }
}

/// `--redis [URL] [--nodes N[,N...]]`: rt-server alone, then as nodes on one Redis.
#[derive(clap::Args, Clone, Debug)]
pub struct RedisArgs {
    /// Run rt-server alone, then as --nodes nodes on one Redis: the one at URL (redis://HOST:PORT), or without URL a throwaway redis-server started for the run
    #[arg(long, value_name = "URL", num_args = 0..=1)]
    pub redis: Option<Option<String>>,
    /// With --redis: the node counts to run, comma-separated [default: 2]
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', value_parser = positive::<usize>)]
    pub nodes: Option<Vec<usize>>,
}

impl RedisArgs {
    /// The node counts, each once, in the order given (default `[2]`).
    pub fn node_counts(&self) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for &n in self.nodes.as_deref().unwrap_or(&[2]) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    /// The URL given with `--redis` (`None`: start a throwaway redis-server).
    pub fn url(&self) -> Option<&str> {
        self.redis.as_ref().and_then(|u| u.as_deref())
    }
}

/// Ends the process with clap's usage error `message` for parser `P` (a
/// combination of flags clap's attributes cannot express).
pub fn usage_error<P: clap::CommandFactory>(message: impl std::fmt::Display) -> ! {
    P::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[arg(long, value_delimiter = ',', value_parser = positive::<usize>)]
        clients: Option<Vec<usize>>,
    }

    #[test]
    fn parses_the_shared_flags() {
        let c = Cli::try_parse_from(["t", "--redis", "--nodes", "2,3,2", "--clients", "200,1000"])
            .unwrap();
        assert_eq!(c.redis.redis, Some(None));
        assert_eq!(c.redis.node_counts(), [2, 3]);
        assert_eq!(c.clients, Some(vec![200, 1000]));
        assert_eq!(c.server.server_cores, "0");
        let c = Cli::try_parse_from(["t", "--redis", "redis://127.0.0.1:1"]).unwrap();
        assert_eq!(c.redis.url(), Some("redis://127.0.0.1:1"));
        assert_eq!(c.redis.node_counts(), [2]);
        assert!(Cli::try_parse_from(["t", "--nodes", "0"]).is_err());
        assert!(Cli::try_parse_from(["t", "--server-cores", "1-0"]).is_err());
        assert!(Cli::try_parse_from(["t", "--server-cores", "9999"]).is_err());
        assert!(Cli::try_parse_from(["t", "--server-threads", "x"]).is_err());
        assert!(Cli::try_parse_from(["t", "--bogus"]).is_err());
    }

    #[test]
    fn positive_numbers() {
        assert_eq!(positive::<f64>("0.5"), Ok(0.5));
        assert!(positive::<f64>("0").is_err());
        assert!(positive::<usize>("-1").is_err());
    }
}
