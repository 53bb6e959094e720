//! The side-by-side summary tables: one column per setup or server, a
//! verdict against a target where the row has one.

/// One line of the summary table.
#[derive(Clone, Debug)]
pub struct TableRow {
    pub label: String,
    /// One cell per setup (`-` when it does not apply).
    pub cells: Vec<String>,
    /// The target and whether it is met, if the row has one.
    pub verdict: String,
}

/// Prints `rows` under a header of `title` and the `setups`' names, 14 characters a column.
pub fn print_table(title: &str, setups: &[String], rows: &[TableRow]) {
    let width = rows
        .iter()
        .map(|r| r.label.chars().count())
        .chain([title.chars().count()])
        .max()
        .unwrap_or(0)
        + 2;
    let mut header = format!("{title:<width$}");
    for s in setups {
        header.push_str(&format!("{s:>14}"));
    }
    println!();
    println!("{header}");
    for r in rows {
        let mut line = format!("{:<width$}", r.label);
        for c in &r.cells {
            line.push_str(&format!("{c:>14}"));
        }
        if !r.verdict.is_empty() {
            line.push_str("   ");
            line.push_str(&r.verdict);
        }
        println!("{line}");
    }
}

/// `single`, `1 node`, `2 nodes`, ...: the column names of the setups.
pub fn setup_name(nodes: Option<usize>) -> String {
    match nodes {
        None => "single".into(),
        Some(1) => "1 node".into(),
        Some(n) => format!("{n} nodes"),
    }
}

/// Whether commands per message at the most clients are within 10% of
/// those at the fewest (independent of the client count).
pub fn independence_verdict(fewest: (usize, f64), most: (usize, f64), unit: &str) -> String {
    if most.0 == fewest.0 {
        return format!("(run two counts of {unit} to compare)");
    }
    let ratio = if fewest.1 > 0.0 {
        most.1 / fewest.1
    } else {
        f64::NAN
    };
    let met = (0.9..=1.1).contains(&ratio);
    format!(
        "{} vs {} {unit}: {ratio:.2}x; target independent of the {unit} (within 10%): {}",
        most.0,
        fewest.0,
        if met { "met" } else { "NOT met" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_verdicts() {
        assert_eq!(setup_name(None), "single");
        assert_eq!(setup_name(Some(1)), "1 node");
        assert_eq!(setup_name(Some(3)), "3 nodes");
        assert_eq!(
            independence_verdict((200, 1.0), (1000, 1.05), "clients"),
            "1000 vs 200 clients: 1.05x; target independent of the clients (within 10%): met"
        );
        assert!(independence_verdict((200, 1.0), (1000, 2.0), "clients").ends_with("NOT met"));
        assert_eq!(
            independence_verdict((200, 1.0), (200, 1.0), "clients"),
            "(run two counts of clients to compare)"
        );
    }
}
