//! The OidcKey finalizer: every key carries it, so that deleting a key that clients still
//! sign with is held (its material keeps serving) until the last such client is gone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Finalizer on OidcKeys.
pub const KEY_FINALIZER: &str = "oidc-operator.dev/key-in-use";

/// The finalizer list a key should have, or `None` when it already has it. `users` are the
/// clients signing with the key.
pub fn finalizers(meta: &ObjectMeta, users: &[String]) -> Option<Vec<String>> {
    let current = meta.finalizers.clone().unwrap_or_default();
    let has = current.iter().any(|f| f == KEY_FINALIZER);
    match (meta.deletion_timestamp.is_some(), has) {
        (false, false) => Some(current.into_iter().chain([KEY_FINALIZER.to_owned()]).collect()),
        (true, true) if users.is_empty() => Some(current.into_iter().filter(|f| f != KEY_FINALIZER).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn added_once_and_released_only_without_users() {
        let mut meta = ObjectMeta { finalizers: Some(vec!["other".into()]), ..ObjectMeta::default() };
        assert_eq!(finalizers(&meta, &[]), Some(vec!["other".to_owned(), KEY_FINALIZER.to_owned()]));
        meta.finalizers = Some(vec!["other".into(), KEY_FINALIZER.into()]);
        assert_eq!(finalizers(&meta, &[]), None);
        meta.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap()));
        assert_eq!(finalizers(&meta, &["app".into()]), None, "held while a client uses the key");
        assert_eq!(finalizers(&meta, &[]), Some(vec!["other".to_owned()]));
        meta.finalizers = Some(vec!["other".into()]);
        assert_eq!(finalizers(&meta, &[]), None, "a deleted key never gets it back");
    }
}
