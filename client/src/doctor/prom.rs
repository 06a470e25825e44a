//! The Prometheus text exposition format (version 0.0.4), read the way
//! Prometheus's own scraper reads it, and the arithmetic the doctor needs
//! on it: sums over label filters, histograms, and what changed between
//! two scrapes.
//!
//! Why not a crate: `openmetrics-parser` applies OpenMetrics rules that
//! Prometheus does not (it refuses a histogram with negative buckets that
//! carries a `_sum`, which our dBFS and slack histograms are), so it failed
//! on a healthy pipeline after its first frame; `prometheus-parse` reads
//! labels with a regular expression that breaks on escaped quotes. The
//! format is small: a sample line is a name, optional labels with quoted
//! and escaped values, a value and an optional timestamp; `#` lines are
//! `HELP`, `TYPE` or comments. Like Prometheus, this reader does not
//! demand that a family's samples follow its `TYPE` line or that a
//! histogram's sum be absent; it fails only on lines Prometheus would
//! fail the scrape for.

use std::collections::HashMap;

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: &'static str,
    /// The line (first 120 characters).
    pub text: String,
}

/// One sample: a series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name as written (`x_bucket`, `x_sum`, … for histograms).
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every `(label, value)` pair of `filter` is on this sample.
    pub fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    samples: Vec<Sample>,
    /// `# TYPE` of each family that declared one.
    types: HashMap<String, String>,
}

impl Exposition {
    /// Parses exposition text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut exposition = Self::default();
        for (i, line) in text.lines().enumerate() {
            let fail = |reason| ParseError {
                line: i + 1,
                reason,
                text: line.chars().take(120).collect(),
            };
            let line = line.trim_matches([' ', '\t', '\r']);
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE") {
                    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                        return Err(fail("a TYPE line needs a name and a type"));
                    };
                    exposition.types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            exposition.samples.push(parse_sample(line).map_err(fail)?);
        }
        Ok(exposition)
    }

    /// An exposition of these samples (e.g. from a Prometheus server's
    /// query API), without type information.
    pub fn from_samples(samples: Vec<Sample>) -> Self {
        Self {
            samples,
            types: HashMap::new(),
        }
    }

    /// Every sample, in the order written.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The declared type of family `name` (`counter`, `gauge`,
    /// `histogram`, …), if any.
    pub fn kind(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }

    /// Whether any sample of `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// The samples of `name` that match `filter`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.matches(filter))
    }

    /// The sum of the samples of `name` that match `filter` (0 when none).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.select(name, filter).map(|s| s.value).sum()
    }

    /// The largest sample of `name` matching `filter`, if any.
    pub fn max(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.select(name, filter)
            .map(|s| s.value)
            .fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
    }

    /// Histogram `name` (its `_bucket`, `_sum` and `_count` samples) summed
    /// over the series that match `filter`; `None` when it has no buckets.
    pub fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Option<Histogram> {
        let bucket_name = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in self.select(&bucket_name, filter) {
            let Some(le) = s.label("le").and_then(parse_value) else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, count)) => *count += s.value,
                None => buckets.push((le, s.value)),
            }
        }
        if buckets.is_empty() {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Histogram {
            buckets,
            sum: self.sum(&format!("{name}_sum"), filter),
            count: self.sum(&format!("{name}_count"), filter),
        })
    }
}

/// A histogram: cumulative bucket counts by upper bound, sum and count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// `(le, cumulative count)`, by `le`, the last normally `+Inf`.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Histogram {
    /// What was observed between `earlier` and this one (counters only
    /// grow, so a smaller value means the process restarted: the later
    /// histogram is then the whole change).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if self.count < earlier.count {
            return self.clone();
        }
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(b, _)| *b == le)
                    .map_or(0.0, |b| b.1);
                (le, (n - before).max(0.0))
            })
            .collect();
        Histogram {
            buckets,
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The mean observation, if there was any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q` quantile (0–1) estimated as Prometheus's
    /// `histogram_quantile` does: linear within the bucket it falls in,
    /// the highest finite bound when it falls in `+Inf`. `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (f64::NEG_INFINITY, 0.0);
        for &(le, n) in &self.buckets {
            if n >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                if lower.0.is_infinite() {
                    // The first bucket: Prometheus assumes it starts at 0
                    // when its bound is positive.
                    let start = if le > 0.0 { 0.0 } else { le };
                    return Some(interpolate(start, le, 0.0, n, rank));
                }
                return Some(interpolate(lower.0, le, lower.1, n, rank));
            }
            lower = (le, n);
        }
        Some(lower.0)
    }

    /// The share of observations above `bound` (which should be a bucket
    /// bound; otherwise the next bound up is used).
    pub fn share_above(&self, bound: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let at_or_below = self
            .buckets
            .iter()
            .find(|(le, _)| *le >= bound)
            .map_or(total, |b| b.1);
        Some((total - at_or_below) / total)
    }
}

fn interpolate(from: f64, to: f64, count_from: f64, count_to: f64, rank: f64) -> f64 {
    if count_to <= count_from {
        return to;
    }
    from + (to - from) * (rank - count_from) / (count_to - count_from)
}

/// A float as the exposition writes it, `NaN` and `±Inf` included.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let mut rest = line;
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| {
            !(if i == 0 {
                is_name_start(c)
            } else {
                is_name_char(c)
            })
        })
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return Err("a sample starts with a metric name");
    }
    let name = rest[..name_len].to_owned();
    rest = rest[name_len..].trim_start_matches([' ', '\t']);
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = fields
        .next()
        .ok_or("a sample needs a value")
        .and_then(|v| parse_value(v).ok_or("the value is not a number"))?;
    if let Some(timestamp) = fields.next()
        && timestamp.parse::<i64>().is_err()
    {
        return Err("the timestamp is not an integer");
    }
    if fields.next().is_some() {
        return Err("text after the timestamp");
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// The labels after `{`, up to and including `}`; returns what follows.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(if i == 0 {
                    c.is_ascii_alphabetic() || c == '_'
                } else {
                    c.is_ascii_alphanumeric() || c == '_'
                })
            })
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 {
            return Err("expected a label name or `}`");
        }
        let key = rest[..len].to_owned();
        rest = rest[len..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or("expected `=` after a label name")?;
        rest = rest.trim_start_matches([' ', '\t']);
        rest = rest.strip_prefix('"').ok_or("a label value is quoted")?;
        let (value, after) = unescape(rest)?;
        labels.push((key, value));
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected `,` or `}` after a label");
        }
    }
}

/// A quoted value's text up to its closing quote (`\\`, `\"` and `\n`
/// unescaped); returns it and what follows the quote.
fn unescape(text: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                // Prometheus keeps an unknown escape as written.
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("a label value is not closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `metrics-exporter-prometheus` renders for a histogram with
    /// negative buckets after traffic: a sum beside negative bounds, which
    /// OpenMetrics forbids and Prometheus accepts.
    const LEVELS: &str = "# TYPE tts_orchestrator_frame_level_dbfs histogram\n\
        tts_orchestrator_frame_level_dbfs_bucket{le=\"-90\"} 0\n\
        tts_orchestrator_frame_level_dbfs_bucket{le=\"-60\"} 2\n\
        tts_orchestrator_frame_level_dbfs_bucket{le=\"-20\"} 10\n\
        tts_orchestrator_frame_level_dbfs_bucket{le=\"0\"} 12\n\
        tts_orchestrator_frame_level_dbfs_bucket{le=\"+Inf\"} 12\n\
        tts_orchestrator_frame_level_dbfs_sum -401.5\n\
        tts_orchestrator_frame_level_dbfs_count 12\n";

    #[test]
    fn negative_buckets_with_a_sum_are_read() {
        let e = Exposition::parse(LEVELS).expect("Prometheus accepts it");
        let h = e
            .histogram("tts_orchestrator_frame_level_dbfs", &[])
            .expect("histogram");
        assert_eq!(h.count, 12.0);
        assert_eq!(h.sum, -401.5);
        assert_eq!(h.buckets.len(), 5);
        assert_eq!(
            e.kind("tts_orchestrator_frame_level_dbfs"),
            Some("histogram")
        );
        // Between -60 and -20: rank 6 of 12 lies half way in that bucket.
        let median = h.quantile(0.5).expect("median");
        assert!((median - (-40.0)).abs() < 1e-9, "{median}");
    }

    #[test]
    fn labels_with_commas_escapes_and_braces() {
        let text = "x_total{reason=\"a, b\",kind=\"c\"} 3\n\
            y{path=\"say \\\"hi\\\" {now}\",nl=\"a\\nb\",} 1.5e3 1700000000000\n\
            z\t{ a = \"1\" }\t-Inf\n\
            w NaN\n";
        let e = Exposition::parse(text).expect("parses");
        assert_eq!(e.sum("x_total", &[("reason", "a, b")]), 3.0);
        assert_eq!(e.sum("x_total", &[("kind", "c")]), 3.0);
        assert_eq!(e.sum("y", &[("path", "say \"hi\" {now}")]), 1500.0);
        assert_eq!(e.samples()[1].label("nl"), Some("a\nb"));
        assert_eq!(e.sum("z", &[("a", "1")]), f64::NEG_INFINITY);
        assert!(e.samples()[3].value.is_nan());
        assert_eq!(e.sum("missing", &[]), 0.0);
        assert_eq!(e.max("x_total", &[]), Some(3.0));
    }

    #[test]
    fn a_sample_need_not_follow_its_type_line() {
        // Prometheus accepts this (`b` is untyped), as does promtool.
        let e =
            Exposition::parse("# TYPE a counter\nb 1\n# HELP c anything at all\n").expect("valid");
        assert_eq!(e.sum("b", &[]), 1.0);
    }

    #[test]
    fn broken_lines_are_refused_with_their_number() {
        for (text, reason) in [
            ("ok 1\na{b=\"c\" 1\n", "expected `,` or `}` after a label"),
            ("ok 1\na{b=\"c} 1\n", "a label value is not closed"),
            ("ok 1\na nope\n", "the value is not a number"),
            ("ok 1\na\n", "a sample needs a value"),
            ("ok 1\na{b=c} 1\n", "a label value is quoted"),
            ("ok 1\n{b=\"c\"} 1\n", "a sample starts with a metric name"),
            ("ok 1\na 1 2 3\n", "text after the timestamp"),
            ("ok 1\na 1 soon\n", "the timestamp is not an integer"),
        ] {
            let err = Exposition::parse(text).expect_err(text);
            assert_eq!((err.line, err.reason), (2, reason), "{text:?}");
        }
    }

    #[test]
    fn histograms_sum_over_series_and_subtract_over_a_window() {
        let at = |n: f64| {
            format!(
                "h_bucket{{w=\"a\",le=\"0.02\"}} {n}\nh_bucket{{w=\"a\",le=\"0.1\"}} {}\n\
                 h_bucket{{w=\"a\",le=\"+Inf\"}} {}\nh_sum{{w=\"a\"}} {}\nh_count{{w=\"a\"}} {}\n\
                 h_bucket{{w=\"b\",le=\"0.02\"}} 1\nh_bucket{{w=\"b\",le=\"0.1\"}} 1\n\
                 h_bucket{{w=\"b\",le=\"+Inf\"}} 1\nh_sum{{w=\"b\"}} 0.01\nh_count{{w=\"b\"}} 1\n",
                2.0 * n,
                2.0 * n,
                n * 0.06,
                2.0 * n
            )
        };
        let start = Exposition::parse(&at(10.0)).expect("parses");
        let end = Exposition::parse(&at(30.0)).expect("parses");
        let both = end.histogram("h", &[]).expect("h");
        assert_eq!(both.count, 61.0);
        let a = end.histogram("h", &[("w", "a")]).expect("a");
        let window = a.since(&start.histogram("h", &[("w", "a")]).expect("a"));
        assert_eq!(window.count, 40.0);
        assert_eq!(
            window.buckets,
            vec![(0.02, 20.0), (0.1, 40.0), (f64::INFINITY, 40.0)]
        );
        assert!((window.mean().expect("mean") - 0.03).abs() < 1e-9);
        assert_eq!(window.share_above(0.02), Some(0.5));
        // p75: rank 30 of 40, half way through (0.02, 0.1].
        let p75 = window.quantile(0.75).expect("p75");
        assert!((p75 - 0.06).abs() < 1e-9, "{p75}");
        // A restart (counts fell) makes the later histogram the window.
        assert_eq!(
            start
                .histogram("h", &[("w", "a")])
                .expect("a")
                .since(&a)
                .count,
            20.0
        );
        assert_eq!(Histogram::default().quantile(0.5), None);
        assert!(end.histogram("nothing", &[]).is_none());
    }

    #[test]
    fn a_quantile_in_the_overflow_bucket_is_the_highest_bound() {
        let h = Histogram {
            buckets: vec![(0.1, 1.0), (1.0, 1.0), (f64::INFINITY, 10.0)],
            sum: 50.0,
            count: 10.0,
        };
        assert_eq!(h.quantile(0.99), Some(1.0));
    }
}
