use super::*;
use proptest::prelude::*;

fn seg(text: &str) -> (SmsEncoding, u32) {
    let c = count(text);
    (c.encoding, c.segments)
}

fn rep(s: &str, n: usize) -> String {
    s.repeat(n)
}

#[test]
fn gsm7_boundaries_are_the_carriers() {
    use SmsEncoding::Gsm7;
    assert_eq!(seg(""), (Gsm7, 1));
    assert_eq!(seg(&rep("a", 160)), (Gsm7, 1));
    assert_eq!(seg(&rep("a", 161)), (Gsm7, 2));
    assert_eq!(seg(&rep("a", 153 * 2)), (Gsm7, 2));
    assert_eq!(seg(&rep("a", 153 * 2 + 1)), (Gsm7, 3));
    // Every basic non-ASCII character is one septet, the extension ones two.
    assert_eq!(seg(&rep("é", 160)), (Gsm7, 1));
    assert_eq!(seg(&(rep("a", 159) + "€")), (Gsm7, 2));
    assert_eq!(seg(&(rep("a", 158) + "€")), (Gsm7, 1));
    assert_eq!(seg(&rep("{", 80)), (Gsm7, 1));
    assert_eq!(seg(&rep("{", 81)), (Gsm7, 2));
}

#[test]
fn an_extension_character_is_never_split_across_segments() {
    use SmsEncoding::Gsm7;
    // 152 septets, then `{` (2) does not fit the first part's 153: it starts the second.
    let at_153 = rep("a", 152) + "{" + &rep("a", 151);
    assert_eq!(seg(&at_153), (Gsm7, 2));
    // One more septet: 305 + 1 would fit two parts if the pair could be split; it cannot.
    let over = rep("a", 152) + "{" + &rep("a", 152);
    assert_eq!(seg(&over), (Gsm7, 3));
    let none_split = rep("a", 151) + "{" + &rep("a", 153);
    assert_eq!(seg(&none_split), (Gsm7, 2));
}

#[test]
fn ucs2_boundaries_count_utf16_units_and_never_split_a_surrogate_pair() {
    use SmsEncoding::Ucs2;
    assert_eq!(seg(&rep("Ж", 70)), (Ucs2, 1));
    assert_eq!(seg(&rep("Ж", 71)), (Ucs2, 2));
    assert_eq!(seg(&rep("Ж", 67 * 2)), (Ucs2, 2));
    assert_eq!(seg(&rep("Ж", 67 * 2 + 1)), (Ucs2, 3));
    // An emoji is two units: 35 of them fill one segment.
    assert_eq!(seg(&rep("😀", 35)), (Ucs2, 1));
    assert_eq!(seg(&rep("😀", 36)), (Ucs2, 2));
    // An emoji at unit 67 does not fit the first part's last unit: it starts the second.
    assert_eq!(seg(&(rep("Ж", 66) + "😀" + &rep("Ж", 65))), (Ucs2, 2));
    assert_eq!(seg(&(rep("Ж", 66) + "😀" + &rep("Ж", 66))), (Ucs2, 3));
    // One character outside GSM-7 makes the whole text UCS-2: 160 `a` and a `ç`.
    assert_eq!(seg(&(rep("a", 160) + "ç")), (Ucs2, 3));
    // Tab and the backtick are not in GSM-7.
    assert_eq!(seg("a\tb").0, Ucs2);
    assert_eq!(seg("a`b").0, Ucs2);
}

#[test]
fn smart_encoding_makes_a_french_sentence_one_gsm7_segment() {
    let sentence = "L’équipe d’intervention arrive à l’adresse indiquée dans 5 minutes, dégagez l’accès au bâtiment s’il vous plaît.";
    // `â` and `î` are not GSM-7: this sentence needs UCS-2 whatever is replaced.
    assert_eq!(seg(sentence), (SmsEncoding::Ucs2, 2));
    assert_eq!(smart(sentence), sentence);
    let sentence = "L’équipe d’intervention arrive à l’adresse indiquée dans 5 minutes, dégagez l’entrée de l’immeuble.";
    assert_eq!(seg(sentence), (SmsEncoding::Ucs2, 2));
    let smart = smart(sentence);
    assert_eq!(seg(&smart), (SmsEncoding::Gsm7, 1));
    assert_eq!(
        smart,
        "L'équipe d'intervention arrive à l'adresse indiquée dans 5 minutes, dégagez l'entrée de l'immeuble."
    );
}

#[test]
fn smart_encoding_replaces_typography_and_leaves_other_scripts_alone() {
    assert_eq!(
        smart("“Fire” — Main St… ‘now’ • 2″ pipe\u{a0}x\u{2009}y"),
        "\"Fire\" - Main St... 'now' - 2\" pipe x y"
    );
    assert_eq!(smart("ＦＩＲＥ！"), "FIRE!");
    // Arabic, Chinese and emoji need UCS-2: the text goes as it is, quotes and all.
    for text in ["حريق في “الشارع”", "火灾 “主街”", "Fire 🔥 “now”"] {
        assert_eq!(smart(text), text);
    }
    // Already GSM-7: borrowed, untouched.
    assert!(matches!(smart("Fire at 12 Main St"), Cow::Borrowed(_)));
}

#[test]
fn every_look_alike_is_gsm7() {
    for n in 0..=0x10FFFFu32 {
        let Some(c) = char::from_u32(n) else { continue };
        if let Some(s) = look_alike(c) {
            assert!(is_gsm7(s), "U+{n:04X} -> {s:?}");
            assert!(gsm7_septets(c).is_none(), "U+{n:04X} is GSM-7 already");
        }
    }
}

/// At most one segment, look-alikes replaced.
const ONE: SmsPolicy = SmsPolicy {
    smart_encoding: true,
    max_segments: 1,
};

const TAIL: &str =
    "Reply 1 responding, 2 unavailable or https://flare.example.org/r/Ab3dEf7hIj9kLm0n";

#[test]
fn a_long_dispatch_is_cut_at_a_word_and_keeps_its_reply_instructions_whole() {
    let body = "Fire: Structure fire at 1200 Industrial Parkway, building C, second floor. Caller reports smoke from the roof and people possibly trapped. Stage at the north gate.";
    let policy = ONE;
    let f = fit(body, Some(TAIL), policy);
    assert!(f.cut);
    assert_eq!(
        f.count,
        SmsCount {
            encoding: SmsEncoding::Gsm7,
            segments: 1
        }
    );
    assert!(f.text.ends_with(&format!("...\n{TAIL}")), "{}", f.text);
    let kept = f.text.strip_suffix(&format!("...\n{TAIL}")).unwrap();
    assert!(body.starts_with(kept), "{kept:?}");
    // Cut after a whole word: what follows in the body is white space.
    assert!(body[kept.len()..].starts_with(' '), "{kept:?}");
    // With room, nothing is cut.
    let f = fit(body, Some(TAIL), SmsPolicy::default());
    assert!(!f.cut);
    assert_eq!(f.text, format!("{body}\n{TAIL}"));
    assert_eq!(f.count.segments, 2);
}

#[test]
fn a_text_that_cannot_be_cut_at_a_word_is_cut_between_characters_that_stand_alone() {
    let policy = ONE;
    let f = fit(&rep("x", 10_000), None, policy);
    assert_eq!(f.text, rep("x", 157) + "...");
    assert_eq!(f.count.segments, 1);
    // A family emoji (joined by ZWJ) is never cut in the middle.
    let family = "👨\u{200D}👩\u{200D}👧";
    let f = fit(&rep(family, 40), None, policy);
    let kept = f.text.strip_suffix("...").unwrap();
    assert!(kept.ends_with('👧'), "{kept:?}");
    assert_eq!(
        f.count,
        SmsCount {
            encoding: SmsEncoding::Ucs2,
            segments: 1
        }
    );
    // Only emoji.
    let f = fit(&rep("🚒", 500), None, policy);
    assert_eq!(f.text, rep("🚒", 33) + "...");
}

#[test]
fn when_nothing_of_the_body_fits_the_mark_and_the_reply_instructions_go() {
    // UCS-2 in one segment is 70 units: the tail alone is longer than that, so none of
    // the Arabic text fits; the link still opens the whole message.
    let policy = ONE;
    let f = fit("حريق في الشارع الرئيسي", Some(TAIL), policy);
    assert!(f.cut);
    assert_eq!(f.text, format!("...\n{TAIL}"));
    assert_eq!(
        f.count,
        SmsCount {
            encoding: SmsEncoding::Gsm7,
            segments: 1
        }
    );
    // A tail longer than the cap goes whole and alone: a cut link opens nothing.
    let long = format!(
        "Reply 1 responding, 2 unavailable or https://{}.example.org/r/x",
        "a".repeat(150)
    );
    let f = fit("Fire", Some(&long), policy);
    assert_eq!(f.text, long);
    assert_eq!(f.count.segments, 2);
}

#[test]
fn without_smart_encoding_the_text_goes_as_typed() {
    let policy = SmsPolicy {
        smart_encoding: false,
        max_segments: 3,
    };
    let f = fit("It’s on fire", None, policy);
    assert_eq!(f.text, "It’s on fire");
    assert_eq!(f.count.encoding, SmsEncoding::Ucs2);
}

fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        2 => Just(' '),
        1 => Just('\n'),
        1 => proptest::sample::select(vec!['é', 'Ä', '€', '{', '^', '|', 'Δ', '£']),
        1 => proptest::sample::select(vec!['’', '“', '—', '…', '\u{a0}', '•']),
        1 => proptest::sample::select(vec!['😀', '🚒', 'Ж', '火', 'ح', '\u{200D}', '\u{0301}', '\u{FE0F}']),
        1 => any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_cap_is_never_exceeded_and_the_tail_never_cut(
        body in proptest::collection::vec(any_char(), 0..1200).prop_map(|v| v.into_iter().collect::<String>()),
        max in 1u8..=10,
        smart_encoding in any::<bool>(),
        with_tail in any::<bool>(),
    ) {
        let tail = with_tail.then_some(TAIL);
        let f = fit(&body, tail, SmsPolicy { smart_encoding, max_segments: max });
        prop_assert!(f.count.segments <= u32::from(max), "{} > {max}: {:?}", f.count.segments, f.text);
        prop_assert_eq!(f.count, count(&f.text));
        if let Some(t) = tail {
            prop_assert!(f.text.ends_with(t));
        }
        if !f.cut {
            prop_assert!(f.text.starts_with(smart(&body).as_ref()) || !smart_encoding || f.text.starts_with(&body));
        }
        if f.cut && !f.text.is_empty() {
            let head = tail.map_or(f.text.as_str(), |t| f.text.strip_suffix(t).unwrap_or(&f.text));
            prop_assert!(head.is_empty() || head.trim_end_matches('\n').ends_with(CUT_MARK));
        }
    }

    #[test]
    fn segments_never_fall_as_a_text_grows(
        text in proptest::collection::vec(any_char(), 1..600).prop_map(|v| v.into_iter().collect::<String>()),
    ) {
        let mut last = 0;
        for (i, c) in text.char_indices() {
            let n = count(&text[..i + c.len_utf8()]).segments;
            prop_assert!(n >= last);
            last = n;
        }
    }

    #[test]
    fn smart_encoding_gives_gsm7_or_the_text_unchanged(
        text in proptest::collection::vec(any_char(), 0..300).prop_map(|v| v.into_iter().collect::<String>()),
    ) {
        let s = smart(&text);
        prop_assert!(is_gsm7(&s) || s == text);
    }
}
