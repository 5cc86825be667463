//! A small fixed-width results table.

use std::fmt;

/// Rows of `(label, count, seconds, value)`; a row without a count is a
/// derived figure such as a ratio.
#[derive(Debug, Default)]
pub struct Table {
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

#[derive(Debug)]
struct Row {
    label: String,
    ops: Option<u64>,
    seconds: Option<f64>,
    value: String,
}

impl Table {
    /// An empty table with a title line.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// A measured rate.
    pub fn rate(&mut self, label: &str, sample: crate::measure::Sample) {
        self.rows.push(Row {
            label: label.to_owned(),
            ops: Some(sample.ops),
            seconds: Some(sample.elapsed.as_secs_f64()),
            value: format!("{:.0}/s", sample.rate()),
        });
    }

    /// A derived figure.
    pub fn derived(&mut self, label: &str, value: String) {
        self.rows.push(Row {
            label: label.to_owned(),
            ops: None,
            seconds: None,
            value,
        });
    }

    /// A line printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.label.len())
            .max()
            .unwrap_or(0)
            .max("measurement".len());
        writeln!(f, "{}", self.title)?;
        writeln!(
            f,
            "{:<width$}  {:>10}  {:>8}  {:>12}",
            "measurement", "ops", "seconds", "result"
        )?;
        writeln!(f, "{}", "-".repeat(width + 2 + 10 + 2 + 8 + 2 + 12))?;
        for row in &self.rows {
            let ops = row.ops.map(|o| o.to_string()).unwrap_or_default();
            let secs = row.seconds.map(|s| format!("{s:.2}")).unwrap_or_default();
            writeln!(
                f,
                "{:<width$}  {:>10}  {:>8}  {:>12}",
                row.label, ops, secs, row.value
            )?;
        }
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        Ok(())
    }
}
