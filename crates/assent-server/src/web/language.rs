//! Which languages a page is shown in: `?lang=` first, then the browser's `Accept-Language` in
//! order of preference.

/// The most languages a page considers; the rest of a long header is ignored.
const MAX_LANGUAGES: usize = 10;

/// The languages to show a page in, best first: `asked` (from the address), then the tags of
/// `accept_language` by decreasing quality. Tags that are not language tags are dropped, and
/// the list is never empty (`en` when nothing usable was given).
pub fn preferred(asked: Option<&str>, accept_language: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |tag: &str| {
        if is_language_tag(tag)
            && out.len() < MAX_LANGUAGES
            && !out.iter().any(|t| t.eq_ignore_ascii_case(tag))
        {
            out.push(tag.to_owned());
        }
    };
    if let Some(tag) = asked {
        push(tag.trim());
    }
    let mut weighted: Vec<(u16, usize, &str)> = accept_language
        .unwrap_or_default()
        .split(',')
        .take(50)
        .enumerate()
        .filter_map(|(i, item)| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            let mut quality = 1000;
            for param in parts {
                if let Some(q) = param.trim().strip_prefix("q=") {
                    quality = q
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .map_or(0, |q| (q * 1000.0) as u16);
                }
            }
            (quality > 0 && tag != "*").then_some((quality, i, tag))
        })
        .collect();
    weighted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, tag) in weighted {
        push(tag);
    }
    if out.is_empty() {
        out.push("en".to_owned());
    }
    out
}

/// The best language of a list made by [`preferred`].
pub fn first(languages: &[String]) -> &str {
    languages.first().map_or("en", String::as_str)
}

/// A language tag as the purpose registry takes them (`en`, `fr-CA`, `zh-Hant-TW`), in any
/// case: tags are case-insensitive.
fn is_language_tag(tag: &str) -> bool {
    assent_model::purpose::check_language(&tag.to_ascii_lowercase()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_comes_before_the_browser() {
        assert_eq!(
            preferred(Some("fr"), Some("de,en;q=0.5")),
            ["fr", "de", "en"]
        );
    }

    #[test]
    fn accept_language_is_sorted_by_quality_then_order() {
        assert_eq!(
            preferred(None, Some("en;q=0.3, fr-CA, de;q=0.8, es;q=0.8, it;q=0")),
            ["fr-CA", "de", "es", "en"]
        );
    }

    #[test]
    fn junk_is_dropped_and_english_is_the_last_resort() {
        assert_eq!(preferred(Some("<script>"), Some("*, 12, ;q=1")), ["en"]);
        assert_eq!(preferred(None, None), ["en"]);
        assert_eq!(preferred(Some("FR"), Some("fr")), ["FR"]);
    }
}
