//! A small fixed-width results table: a label column, then named columns,
//! then notes printed under the rows.

use std::fmt;
use std::time::Duration;

/// The columns of a rate table (`lanyard-bench sign`).
const RATE_COLUMNS: [&str; 3] = ["ops", "seconds", "result"];

/// Rows of a label and one cell per column; a row may leave cells empty
/// (a derived figure such as a ratio fills only the last one).
#[derive(Debug)]
pub struct Table {
    title: String,
    columns: Vec<String>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

#[derive(Debug)]
struct Row {
    label: String,
    cells: Vec<String>,
}

impl Table {
    /// An empty rate table (`ops`, `seconds`, `result`) with a title line.
    pub fn new(title: impl Into<String>) -> Self {
        Self::with_columns(title, &RATE_COLUMNS)
    }

    /// An empty table with these column headers after the label column.
    pub fn with_columns(title: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, label: &str, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.columns.len(), String::new());
        self.rows.push(Row {
            label: label.to_owned(),
            cells,
        });
    }

    /// A measured rate (in a rate table).
    pub fn rate(&mut self, label: &str, sample: crate::measure::Sample) {
        self.row(
            label,
            vec![
                sample.ops.to_string(),
                format!("{:.2}", sample.elapsed.as_secs_f64()),
                format!("{:.0}/s", sample.rate()),
            ],
        );
    }

    /// A derived figure in the last column.
    pub fn derived(&mut self, label: &str, value: String) {
        let mut cells = vec![String::new(); self.columns.len().saturating_sub(1)];
        cells.push(value);
        self.row(label, cells);
    }

    /// A line printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label_width = self
            .rows
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0)
            .max("measurement".len());
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, header)| {
                self.rows
                    .iter()
                    .filter_map(|r| r.cells.get(i))
                    .map(|c| c.chars().count())
                    .chain([header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        writeln!(f, "{}", self.title)?;
        write!(f, "{:<label_width$}", "measurement")?;
        for (header, width) in self.columns.iter().zip(&widths) {
            write!(f, "  {header:>width$}")?;
        }
        writeln!(f)?;
        let total = label_width + widths.iter().map(|w| w + 2).sum::<usize>();
        writeln!(f, "{}", "-".repeat(total))?;
        for row in &self.rows {
            write!(f, "{:<label_width$}", row.label)?;
            for (cell, width) in row.cells.iter().zip(&widths) {
                write!(f, "  {cell:>width$}")?;
            }
            writeln!(f)?;
        }
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        Ok(())
    }
}

/// A duration in the unit that keeps it readable: `850µs`, `12.3ms`, `1.25s`.
pub fn duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0}µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2}ms", micros / 1e3)
    } else {
        format!("{:.2}s", micros / 1e6)
    }
}

/// A byte count in binary units: `512 B`, `3.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{:.1} MiB", f / (KIB * KIB))
    }
}

/// `a / b` to two decimals, or `n/a` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut t = Table::with_columns("title", &["n", "p50"]);
        t.row("short", vec!["1".into(), "2.00ms".into()]);
        t.row("a longer label", vec!["1000".into(), "15.00ms".into()]);
        t.derived("ratio", "3.00x".into());
        t.note("a note");
        let text = t.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "title");
        assert_eq!(lines[1], "measurement        n      p50");
        assert_eq!(lines[2], "-".repeat(lines[1].len()));
        assert_eq!(lines[3], "short              1   2.00ms");
        assert_eq!(lines[4], "a longer label  1000  15.00ms");
        assert_eq!(lines[5], "ratio                   3.00x");
        assert_eq!(lines[6], "a note");
        // Every row is as wide as the header.
        for line in &lines[1..6] {
            assert_eq!(line.chars().count(), lines[1].len(), "{line:?}");
        }
    }

    #[test]
    fn rows_are_padded_to_the_column_count() {
        let mut t = Table::with_columns("t", &["a", "b", "c"]);
        t.row("x", vec!["1".into()]);
        t.row("y", vec!["1".into(), "2".into(), "3".into(), "4".into()]);
        let text = t.to_string();
        assert!(!text.contains('4'), "{text}");
        assert_eq!(text.lines().nth(3).unwrap().trim_end(), "x            1");
    }

    #[test]
    fn rate_tables_keep_their_columns() {
        let mut t = Table::new("sign");
        t.rate(
            "signed",
            crate::measure::Sample {
                ops: 100,
                elapsed: Duration::from_secs(2),
            },
        );
        let text = t.to_string();
        assert!(text.contains("ops") && text.contains("seconds") && text.contains("result"));
        assert!(text.contains("   100     2.00    50/s"), "{text}");
    }

    #[test]
    fn units_are_readable() {
        assert_eq!(duration(Duration::from_micros(850)), "850µs");
        assert_eq!(duration(Duration::from_micros(12_345)), "12.35ms");
        assert_eq!(duration(Duration::from_millis(1_250)), "1.25s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3584), "3.5 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(ratio(3.0, 2.0), "1.50x");
        assert_eq!(ratio(3.0, 0.0), "n/a");
    }
}
