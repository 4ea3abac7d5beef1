//! A server's `/metrics`, read the way the tests check it.

/// The text of `{base}/metrics`.
pub async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text")
}

/// The sum of the samples in `text` of `series`: a series exactly as exposed (a name with
/// its labels), or a bare name, for every series of that name whose labels contain each of
/// `labels` (e.g. `reason="limit"`). `None` when no sample matches.
pub fn value(text: &str, series: &str, labels: &[&str]) -> Option<f64> {
    let samples: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, sample) = l.rsplit_once(' ')?;
            let name = key.split('{').next()?;
            let matches =
                key == series || (name == series && labels.iter().all(|label| key.contains(label)));
            matches.then(|| sample.parse::<f64>().ok()).flatten()
        })
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// [`value`] of `series` in one scrape of `base`; panics when the server does not export it.
pub async fn metric(base: &str, series: &str) -> f64 {
    let text = scrape(base).await;
    value(&text, series, &[]).unwrap_or_else(|| panic!("{series} in {text}"))
}
