//! The look of an organization's preference center (Assent): title, introduction, logo,
//! colours and default language, checked for WCAG 2.1 AA contrast.

use crate::error::{DomainError, FieldErrors};
use crate::json::{Fields, Path, check_bounds};
use crate::purpose::check_language;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The title shown when none is set.
pub const DEFAULT_TITLE: &str = "Your privacy choices";
/// Most characters of the title.
pub const MAX_TITLE_CHARS: usize = 120;
/// Most characters of the introduction.
pub const MAX_INTRO_CHARS: usize = 1000;
/// Most characters of the logo URL.
pub const MAX_LOGO_URL_CHARS: usize = 2048;
/// The least contrast ratio WCAG 2.1 AA asks of normal text.
pub const MIN_CONTRAST: f64 = 4.5;

/// The colours of the page, each `#rrggbb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Colors {
    /// Buttons and toggles; their text is white on it.
    pub primary: String,
    /// The page's background.
    pub background: String,
    /// The text on the background.
    pub text: String,
}

impl Default for Colors {
    /// A blue that holds white text, on white, with near-black text.
    fn default() -> Self {
        Colors {
            primary: "#1a56db".to_owned(),
            background: "#ffffff".to_owned(),
            text: "#111827".to_owned(),
        }
    }
}

/// How an organization's preference center looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceCenterLook {
    /// The page's title.
    pub title: String,
    /// A paragraph under the title.
    pub intro: Option<String>,
    /// The logo's absolute `https://` or `http://` URL.
    pub logo_url: Option<String>,
    /// The colours.
    pub colors: Colors,
    /// The language shown when neither `?lang=` nor `Accept-Language` picks one.
    pub default_language: String,
}

impl Default for PreferenceCenterLook {
    /// The look of a preference center never set up.
    fn default() -> Self {
        PreferenceCenterLook {
            title: DEFAULT_TITLE.to_owned(),
            intro: None,
            logo_url: None,
            colors: Colors::default(),
            default_language: "en".to_owned(),
        }
    }
}

const LOOK_FIELDS: &[&str] = &[
    "organization_id",
    "title",
    "intro",
    "logo_url",
    "colors",
    "default_language",
    "updated_at",
];
const COLOR_FIELDS: &[&str] = &["primary", "background", "text"];

impl PreferenceCenterLook {
    /// Reads a `PUT /v1/preference-center` body of organization `organization_id`: every field
    /// is optional and takes its default when left out. `organization_id` and `updated_at`
    /// are accepted so that what `GET` answers can be sent back changed; `updated_at` is
    /// ignored.
    pub fn parse(body: &Value, organization_id: &str) -> Result<PreferenceCenterLook, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(body, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(body, Path::Root, LOOK_FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        let mut look = PreferenceCenterLook::default();
        if let Some(o) = f.string("organization_id", &mut errors)
            && o != organization_id
        {
            errors.add(
                "organization_id",
                "must equal the organization_id of the query",
            );
        }
        if let Some(title) = text(&f, "title", MAX_TITLE_CHARS, &mut errors) {
            look.title = title;
        }
        look.intro = text(&f, "intro", MAX_INTRO_CHARS, &mut errors);
        look.logo_url = f
            .string("logo_url", &mut errors)
            .and_then(|u| match check_logo_url(u) {
                Ok(()) => Some(u.to_owned()),
                Err(m) => {
                    errors.add("logo_url", m);
                    None
                }
            });
        if let Some(lang) = f.string("default_language", &mut errors) {
            match check_language(lang) {
                Ok(()) => look.default_language = lang.to_owned(),
                Err(m) => errors.add("default_language", m),
            }
        }
        match f.get("colors") {
            None | Some(Value::Null) => {}
            Some(v) => {
                if let Some(c) = Fields::of(v, f.child("colors"), COLOR_FIELDS, &mut errors) {
                    for (key, slot) in [
                        ("primary", &mut look.colors.primary),
                        ("background", &mut look.colors.background),
                        ("text", &mut look.colors.text),
                    ] {
                        if let Some(s) = c.string(key, &mut errors) {
                            match parse_color(s) {
                                Ok(_) => *slot = s.to_ascii_lowercase(),
                                Err(m) => errors.add(c.child(key), m),
                            }
                        }
                    }
                    c.finish(&mut errors);
                }
            }
        }
        f.string("updated_at", &mut errors);
        f.finish(&mut errors);
        if errors.is_empty() {
            look.check_contrast(&mut errors);
        }
        errors.into_result()?;
        Ok(look)
    }

    /// Records a colour whose contrast falls below WCAG 2.1 AA: the text on the background,
    /// and white button text on the primary colour.
    fn check_contrast(&self, errors: &mut FieldErrors) {
        let c = &self.colors;
        let pairs = [
            (
                "colors.text",
                "text",
                c.text.as_str(),
                "background",
                c.background.as_str(),
            ),
            (
                "colors.primary",
                "white button text",
                "#ffffff",
                "primary",
                c.primary.as_str(),
            ),
        ];
        for (path, fg_name, fg, bg_name, bg) in pairs {
            let (Ok(fg_rgb), Ok(bg_rgb)) = (parse_color(fg), parse_color(bg)) else {
                continue;
            };
            let ratio = contrast_ratio(fg_rgb, bg_rgb);
            if ratio < MIN_CONTRAST {
                errors.add(
                    path,
                    format!(
                        "the contrast of {fg_name} {fg} on {bg_name} {bg} is {}:1; WCAG 2.1 AA \
                         needs at least {MIN_CONTRAST}:1",
                        floor2(ratio)
                    ),
                );
            }
        }
    }
}

/// `x` rounded down to two decimals, so that a failing ratio never shows as passing.
fn floor2(x: f64) -> String {
    format!("{:.2}", (x * 100.0).floor() / 100.0)
}

/// A string of 1 to `max` characters, or `None` when absent or `null`.
fn text(f: &Fields<'_, '_>, key: &str, max: usize, errors: &mut FieldErrors) -> Option<String> {
    let s = f.string(key, errors)?;
    let n = s.chars().count();
    if s.trim().is_empty() {
        errors.add(
            f.child(key),
            "must not be empty; leave it out or send null instead",
        );
        None
    } else if n > max {
        errors.add(
            f.child(key),
            format!("is {n} characters long; the limit is {max}"),
        );
        None
    } else {
        Some(s.to_owned())
    }
}

/// Checks a logo URL: absolute `https://` or `http://` with a host, at most 2048 characters.
pub fn check_logo_url(s: &str) -> Result<(), String> {
    if s.chars().count() > MAX_LOGO_URL_CHARS {
        return Err(format!("is longer than {MAX_LOGO_URL_CHARS} characters"));
    }
    match url::Url::parse(s) {
        Ok(u)
            if matches!(u.scheme(), "https" | "http")
                && u.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        _ => Err("must be an absolute https:// or http:// URL".to_owned()),
    }
}

/// Parses `#rrggbb` (either case) into its red, green and blue.
pub fn parse_color(s: &str) -> Result<[u8; 3], String> {
    let bad = || {
        format!(
            "'{}' is not a colour as #rrggbb",
            crate::ids::truncate(s, 16)
        )
    };
    let hex = s
        .strip_prefix('#')
        .filter(|h| h.len() == 6)
        .ok_or_else(bad)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

/// The relative luminance of an sRGB colour (WCAG 2.1).
pub fn relative_luminance([r, g, b]: [u8; 3]) -> f64 {
    let channel = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
}

/// The WCAG 2.1 contrast ratio of two colours, from 1 to 21.
pub fn contrast_ratio(a: [u8; 3], b: [u8; 3]) -> f64 {
    let (la, lb) = (relative_luminance(a), relative_luminance(b));
    let (light, dark) = if la >= lb { (la, lb) } else { (lb, la) };
    (light + 0.05) / (dark + 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(body: Value) -> Vec<(String, String)> {
        match PreferenceCenterLook::parse(&body, "acme").unwrap_err() {
            DomainError::Invalid { errors, .. } => errors
                .as_map()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn contrast_follows_wcag() {
        let white = [255, 255, 255];
        let black = [0, 0, 0];
        assert!((contrast_ratio(white, black) - 21.0).abs() < 1e-9);
        assert!((contrast_ratio(white, white) - 1.0).abs() < 1e-9);
        // #767676 on white is the classic just-passing grey (4.54:1); #777777 fails (4.48:1).
        let pass = contrast_ratio(parse_color("#767676").unwrap(), white);
        let fail = contrast_ratio(parse_color("#777777").unwrap(), white);
        assert!((4.5..4.6).contains(&pass), "{pass}");
        assert!((4.4..4.5).contains(&fail), "{fail}");
        assert_eq!(floor2(4.499), "4.49");
    }

    #[test]
    fn an_empty_body_gives_the_defaults_which_pass_aa() {
        let look = PreferenceCenterLook::parse(&json!({}), "acme").unwrap();
        assert_eq!(look, PreferenceCenterLook::default());
        assert_eq!(look.title, "Your privacy choices");
        let c = &look.colors;
        let ratio = contrast_ratio([255, 255, 255], parse_color(&c.primary).unwrap());
        assert!(ratio >= MIN_CONTRAST, "{ratio}");
    }

    #[test]
    fn low_contrast_is_refused_at_the_colours_path_with_the_ratio() {
        let errors = errors_of(json!({"colors": {"text": "#777777", "primary": "#FFFF00"}}));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, "colors.primary");
        assert!(errors[0].1.contains("1.07:1"), "{}", errors[0].1);
        assert_eq!(errors[1].0, "colors.text");
        assert!(errors[1].1.contains("4.47:1"), "{}", errors[1].1);
        let errors = errors_of(json!({"colors": {"background": "#000000"}}));
        assert_eq!(errors[0].0, "colors.text");
    }

    #[test]
    fn fields_are_checked_one_by_one() {
        let errors = errors_of(json!({
            "title": "t".repeat(121), "intro": "i".repeat(1001), "logo_url": "ftp://x/logo.png",
            "colors": {"primary": "blue", "text": "#12345", "accent": "#000000"},
            "default_language": "English", "theme": "dark"}));
        let paths: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            paths,
            [
                "colors.accent",
                "colors.primary",
                "colors.text",
                "default_language",
                "intro",
                "logo_url",
                "theme",
                "title"
            ]
        );
        assert!(check_logo_url("https://cdn.example.com/logo.svg").is_ok());
        assert!(check_logo_url("http://example.com/l.png").is_ok());
        assert!(check_logo_url("/logo.png").is_err());
        assert!(check_logo_url("javascript:alert(1)").is_err());
        assert!(check_logo_url(&format!("https://e.com/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn a_full_look_is_kept_with_colours_in_lower_case() {
        let look = PreferenceCenterLook::parse(
            &json!({"title": "Choices", "intro": "Hello", "logo_url": "https://e.com/l.png",
                    "colors": {"primary": "#0B5394", "background": "#FFFFFF", "text": "#000000"},
                    "default_language": "fr", "organization_id": "acme",
                    "updated_at": "2026-01-01T00:00:00.000Z"}),
            "acme",
        )
        .unwrap();
        assert_eq!(look.colors.primary, "#0b5394");
        assert_eq!(look.default_language, "fr");
        assert_eq!(look.intro.as_deref(), Some("Hello"));
    }
}
