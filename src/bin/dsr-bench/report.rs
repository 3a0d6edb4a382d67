//! The report: one row per measure, its repetitions and its ratio to a baseline.

/// One line of the report: a measure's repetitions and its ratio to a baseline's median.
pub(crate) struct Row {
    name: String,
    values: Vec<f64>,
    ratio: Option<(f64, String)>,
}

impl Row {
    pub(crate) fn new(
        name: &str,
        values: &[f64],
        baseline: Option<&[f64]>,
        baseline_name: &str,
    ) -> Row {
        let ratio = baseline
            .filter(|b| !b.is_empty() && !values.is_empty())
            .map(|b| (median(values) / median(b), baseline_name.to_owned()));
        Row {
            name: name.to_owned(),
            values: values.to_vec(),
            ratio,
        }
    }

    pub(crate) fn markdown(&self) -> String {
        if self.values.is_empty() {
            return format!("| {} | n/a | | |", self.name);
        }
        let min = self.values.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = self
            .values
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        let ratio = self
            .ratio
            .as_ref()
            .map(|(r, b)| format!("{r:.2}x {b}"))
            .unwrap_or_default();
        format!(
            "| {} | {} | {}-{} | {ratio} |",
            self.name,
            fmt(median(&self.values)),
            fmt(min),
            fmt(max)
        )
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "values": self.values,
            "median": if self.values.is_empty() { None } else { Some(median(&self.values)) },
            "ratio": self.ratio.as_ref().map(|(r, _)| r),
            "baseline": self.ratio.as_ref().map(|(_, b)| b),
        })
    }
}

pub(crate) fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub(crate) fn percentile(latencies_ms: &[f64], p: f64) -> f64 {
    let mut v = latencies_ms.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
