//! `solive replay`: Algorithm 1 over a recorded trace, through the same
//! [`Reserver`] the live loop uses.
//!
//! Input: CSV with the header `total_outgoing_bps,outgoing_bps,migration_bps`
//! (columns in any order, extra columns ignored); row 0 is the measurement
//! before the migration. Output: `step,avail_pct,mig_pct,reserve_pct` with two
//! decimals, one row per input row.

use std::fmt::Write as _;

use super::algorithm::{Measurement, Params, Reserver};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayError {
    #[error("line 1: the header must name total_outgoing_bps, outgoing_bps and migration_bps; {0} is missing")]
    MissingColumn(&'static str),
    #[error("the input is empty: it needs a header and at least one row")]
    Empty,
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

const COLUMNS: [&str; 3] = ["total_outgoing_bps", "outgoing_bps", "migration_bps"];

/// Replays `input` and returns the output CSV.
pub fn replay(params: Params, input: &str) -> Result<String, ReplayError> {
    let mut lines = input
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or(ReplayError::Empty)?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut index = [0usize; 3];
    for (i, col) in COLUMNS.iter().enumerate() {
        index[i] = names
            .iter()
            .position(|n| n == col)
            .ok_or(ReplayError::MissingColumn(col))?;
    }
    let mut reserver = Reserver::new(params);
    let mut out = String::from("step,avail_pct,mig_pct,reserve_pct\n");
    let mut step = 0;
    for (i, line) in lines {
        let line_no = i + 1;
        let err = |message: String| ReplayError::Line {
            line: line_no,
            message,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != names.len() {
            return Err(err(format!(
                "{} fields, the header has {}",
                fields.len(),
                names.len()
            )));
        }
        let mut v = [0f64; 3];
        for (k, col) in COLUMNS.iter().enumerate() {
            let raw = fields[index[k]];
            let x: f64 = raw
                .parse()
                .map_err(|_| err(format!("{col} {raw:?} is not a number")))?;
            if !x.is_finite() || x < 0.0 {
                return Err(err(format!("{col} {raw} must be a non-negative number")));
            }
            v[k] = x;
        }
        if v[0] == 0.0 {
            return Err(err("total_outgoing_bps (the capacity) is 0".into()));
        }
        let s = reserver.step(&Measurement {
            capacity: v[0],
            outgoing: v[1],
            migration: v[2],
        });
        let _ = writeln!(
            out,
            "{step},{:.2},{:.2},{:.2}",
            s.avail_pct, s.mig_pct, s.reserve_pct
        );
        step += 1;
    }
    if step == 0 {
        return Err(ReplayError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(u: f64, t: f64, m: f64) -> Params {
        Params::new(u, t, m).unwrap()
    }

    /// A trace worked out by hand (C = 100 Mbit/s, urgency 75, threshold 10,
    /// max 95), one branch per row:
    /// 0: 70 M out -> avail 30, initial max(30, 75) = 75
    /// 1: 95 out, 20 mig -> avail 5 (no room); 75-20 = 55 > 10 -> release to 20
    /// 2: 99.5 out, 19.5 mig -> avail 0.5; 20-19.5 = 0.5 < 1 and 75 > 20 -> 75
    /// 3: 95 out, 70 mig -> avail 5; 75-70 = 5: neither -> stays 75
    /// 4: 60 out, 60 mig -> avail 40 > 10 -> 75+40 = 115, clamped to 95
    /// 5: 100 out, 30 mig -> avail 0; 95-30 = 65 > 10 -> 30
    const TRACE: &str = "total_outgoing_bps,outgoing_bps,migration_bps
100000000,70000000,0
100000000,95000000,20000000
100000000,99500000,19500000
100000000,95000000,70000000
100000000,60000000,60000000
100000000,100000000,30000000
";

    #[test]
    fn hand_worked_trace() {
        let out = replay(params(75.0, 10.0, 95.0), TRACE).unwrap();
        assert_eq!(
            out,
            "step,avail_pct,mig_pct,reserve_pct
0,30.00,0.00,75.00
1,5.00,20.00,20.00
2,0.50,19.50,75.00
3,5.00,70.00,75.00
4,40.00,60.00,95.00
5,0.00,30.00,30.00
"
        );
    }

    /// The paper's Figure 6(a) situation: an outgoing-intensive VM holds the
    /// link before the migration, so the initial reservation is the urgency;
    /// once it has left, the link is nearly free and the reservation climbs to
    /// the maximum. Urgency 55, threshold 5, max 95, C = 1 Gbit/s.
    #[test]
    fn outgoing_vm_leaves_and_the_reservation_climbs() {
        let trace = "outgoing_bps,migration_bps,total_outgoing_bps
900000000,0,1000000000
1000000000,550000000,1000000000
600000000,550000000,1000000000
";
        // 0: avail 10 -> max(10, 55) = 55
        // 1: avail 0; 55-55 = 0 < 1 but urgency 55 is not > 55; 0 > 5? no -> 55
        // 2: avail 40 > 5 -> 95
        let out = replay(params(55.0, 5.0, 95.0), trace).unwrap();
        assert_eq!(out, "step,avail_pct,mig_pct,reserve_pct\n0,10.00,0.00,55.00\n1,0.00,55.00,55.00\n2,40.00,55.00,95.00\n");
    }

    #[test]
    fn malformed_input_names_the_line() {
        let p = params(75.0, 10.0, 95.0);
        let cases = [
            (
                "total_outgoing_bps,outgoing_bps\n1,2\n",
                "migration_bps is missing",
            ),
            (
                "total_outgoing_bps,outgoing_bps,migration_bps\n100,x,0\n",
                "line 2: outgoing_bps \"x\"",
            ),
            (
                "total_outgoing_bps,outgoing_bps,migration_bps\n100,1,0\n0,1,0\n",
                "line 3: total_outgoing_bps (the capacity) is 0",
            ),
            (
                "total_outgoing_bps,outgoing_bps,migration_bps\n100,-1,0\n",
                "line 2: outgoing_bps -1 must be a non-negative",
            ),
            (
                "total_outgoing_bps,outgoing_bps,migration_bps\n100,1\n",
                "line 2: 2 fields",
            ),
            ("total_outgoing_bps,outgoing_bps,migration_bps\n", "empty"),
            ("", "empty"),
        ];
        for (input, needle) in cases {
            let e = replay(p, input).unwrap_err().to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
        }
    }
}
