//! Splitting, share files (parsed, checksummed), combining and the check
//! value.
use super::*;

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("custodian-{i}")).collect()
}

fn reparse(share: &KekShare) -> KekShare {
    KekShare::parse(&share.to_text()).unwrap()
}

#[test]
fn any_threshold_of_the_shares_in_any_order_rebuild_the_kek() {
    let kek = SecretKey::generate().unwrap();
    let shares = split(&kek, 3, &names(5)).unwrap();
    for order in [[0, 1, 2], [4, 2, 0], [3, 4, 1], [2, 3, 4]] {
        let mut combiner = Combiner::new(Vec::new());
        for (n, i) in order.iter().enumerate() {
            match combiner.offer(reparse(&shares[*i])).unwrap() {
                Progress::Need {
                    received,
                    threshold,
                } => {
                    assert_eq!((received as usize, threshold), (n + 1, 3));
                }
                Progress::Complete(key) => {
                    assert_eq!(n, 2);
                    assert_eq!(key.expose(), kek.expose());
                }
            }
        }
        assert_eq!(combiner.received(), 0, "shares wiped after combining");
    }
}

#[test]
fn wrong_foreign_and_duplicate_shares_are_refused() {
    let kek = SecretKey::generate().unwrap();
    let shares = split(&kek, 2, &names(3)).unwrap();
    let other = split(&kek, 2, &names(3)).unwrap();
    let mut combiner = Combiner::new(Vec::new());
    assert!(matches!(
        combiner.offer(reparse(&shares[0])),
        Ok(Progress::Need { received: 1, .. })
    ));
    assert_eq!(
        combiner.offer(reparse(&shares[0])).err(),
        Some(ShareError::Duplicate(1))
    );
    assert!(matches!(
        combiner.offer(reparse(&other[1])),
        Err(ShareError::Foreign { .. })
    ));
    // An expected set refuses even the first share of another.
    let mut pinned = Combiner::new(vec![shares[0].set.clone()]);
    assert!(matches!(
        pinned.offer(reparse(&other[0])),
        Err(ShareError::Foreign { .. })
    ));
    assert!(matches!(
        combiner.offer(reparse(&shares[2])),
        Ok(Progress::Complete(_))
    ));
}

#[test]
fn a_mistyped_or_truncated_share_fails_its_checksum() {
    let kek = SecretKey::generate().unwrap();
    let shares = split(&kek, 2, &names(2)).unwrap();
    let text = shares[0].to_text();
    let data_line = text.lines().find(|l| l.starts_with("data: ")).unwrap();
    let digit = data_line.as_bytes()[10];
    let swapped = if digit == b'0' { '1' } else { '0' };
    let mut typo = data_line.to_owned();
    typo.replace_range(10..11, &swapped.to_string());
    assert_eq!(
        KekShare::parse(&text.replace(data_line, &typo)).err(),
        Some(ShareError::Checksum)
    );
    let cut = &text[..text.len() - 30];
    assert!(KekShare::parse(cut).is_err());
    assert!(KekShare::parse("").is_err());
    assert!(KekShare::parse(&"#".repeat(5000)).is_err());
}

#[test]
fn a_forged_share_with_a_matching_checksum_is_caught_by_the_check_value() {
    let kek = SecretKey::generate().unwrap();
    let shares = split(&kek, 2, &names(2)).unwrap();
    let text = shares[1].to_text();
    let data_line = text.lines().find(|l| l.starts_with("data: ")).unwrap();
    let mut forged = data_line.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    let mut forged_text = text.replace(data_line, &forged);
    let forged_body: String = forged_text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("checksum"))
        .map(|l| format!("{l}\n"))
        .collect();
    let old_sum = text.lines().find(|l| l.starts_with("checksum")).unwrap();
    forged_text = forged_text.replace(old_sum, &format!("checksum: {}", checksum(&forged_body)));
    let mut combiner = Combiner::new(Vec::new());
    combiner.offer(reparse(&shares[0])).unwrap();
    let forged = KekShare::parse(&forged_text).unwrap();
    assert_eq!(combiner.offer(forged).err(), Some(ShareError::Mismatch));
    assert_eq!(combiner.received(), 0);
}

#[test]
fn printing_a_share_shows_no_share_bytes() {
    let kek = SecretKey::generate().unwrap();
    let shares = split(&kek, 2, &names(2)).unwrap();
    let text = shares[0].to_text();
    let data = text.lines().find(|l| l.starts_with("data: ")).unwrap();
    let printed = format!("{:?}", shares[0]);
    assert!(!printed.contains(&data[6..]), "{printed}");
    assert!(printed.contains("redacted"));
}

#[test]
fn during_a_rotation_either_set_unseals_but_never_a_mix() {
    let old_kek = SecretKey::generate().unwrap();
    let new_kek = SecretKey::generate().unwrap();
    let old = split(&old_kek, 2, &names(3)).unwrap();
    let new = split(&new_kek, 2, &names(3)).unwrap();
    let accepted = vec![old[0].set.clone(), new[0].set.clone()];
    let mut combiner = Combiner::new(accepted.clone());
    combiner.offer(reparse(&new[2])).unwrap();
    assert!(matches!(
        combiner.offer(reparse(&old[0])),
        Err(ShareError::Foreign { .. })
    ));
    match combiner.offer(reparse(&new[0])).unwrap() {
        Progress::Complete(key) => assert_eq!(key.expose(), new_kek.expose()),
        other => panic!("{other:?}"),
    }
    let mut combiner = Combiner::new(accepted);
    combiner.offer(reparse(&old[1])).unwrap();
    match combiner.offer(reparse(&old[2])).unwrap() {
        Progress::Complete(key) => assert_eq!(key.expose(), old_kek.expose()),
        other => panic!("{other:?}"),
    }
    let third = split(&SecretKey::generate().unwrap(), 2, &names(2)).unwrap();
    let mut combiner = Combiner::new(vec![old[0].set.clone(), new[0].set.clone()]);
    assert!(matches!(
        combiner.offer(reparse(&third[0])),
        Err(ShareError::Foreign { .. })
    ));
}

#[test]
fn parameters_are_checked() {
    let kek = SecretKey::generate().unwrap();
    assert!(split(&kek, 1, &names(3)).is_err());
    assert!(split(&kek, 4, &names(3)).is_err());
    assert!(split(&kek, 2, &names(65)).is_err());
    assert!(split(&kek, 2, &["bad name".to_owned(), "b".to_owned()]).is_err());
}
