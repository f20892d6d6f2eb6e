//! "Did you mean" suggestions for misspelt keys and field names.

/// The candidate closest to `input`, if it is close enough to be a likely
/// typo: within one or two edits (ignoring ASCII case), a truncation
/// (`timestamp` for `timestamp_ms`) or an abbreviation (`SignEncrypt` for
/// `SignAndEncrypt`). Shared by every file parser that suggests names.
pub fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // Keys longer than this are not typos of our short field names, and the
    // distance computation is quadratic.
    if input.len() > 64 {
        return None;
    }
    let lower = input.to_ascii_lowercase();
    let folded: Vec<String> = candidates.iter().map(|c| c.to_ascii_lowercase()).collect();
    // A truncated key is a likely mistake even when it is many edits away.
    if lower.len() >= 4
        && let Some(i) = folded.iter().position(|c| c.starts_with(&lower))
    {
        return Some(candidates[i]);
    }
    let max_distance = if input.chars().count() <= 3 { 1 } else { 2 };
    let near = folded
        .iter()
        .enumerate()
        .map(|(i, candidate)| (distance(&lower, candidate), i))
        .filter(|(d, _)| *d <= max_distance)
        .min_by_key(|(d, _)| *d)
        .map(|(_, i)| candidates[i]);
    near.or_else(|| {
        // An abbreviation: every character of the input, in order.
        (lower.len() >= 4)
            .then(|| folded.iter().position(|c| is_subsequence(&lower, c)))
            .flatten()
            .map(|i| candidates[i])
    })
}

fn is_subsequence(short: &str, long: &str) -> bool {
    let mut rest = long.chars();
    short.chars().all(|c| rest.by_ref().any(|l| l == c))
}

/// Optimal string alignment distance: Levenshtein plus adjacent
/// transpositions, so `vlaue` is one edit from `value`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("value", "value"), 0);
        assert_eq!(distance("vlaue", "value"), 1);
        assert_eq!(distance("valu", "value"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_candidate() {
        let keys = ["timestamp_ms", "value", "quality"];
        assert_eq!(closest("vlaue", &keys), Some("value"));
        assert_eq!(closest("timestamp", &keys), Some("timestamp_ms"));
        assert_eq!(closest("time", &keys), Some("timestamp_ms"));
        assert_eq!(closest("val", &keys), None);
        assert_eq!(closest("timestamp_m", &keys), Some("timestamp_ms"));
        assert_eq!(closest("qualty", &keys), Some("quality"));
        assert_eq!(closest("foo", &keys), None);
        assert_eq!(closest(&"x".repeat(100), &keys), None);
    }
}
