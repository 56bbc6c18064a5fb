//! Grants in Redis: one hash per grant (`P:{<grant id>}:grant`) holding the code or the
//! client grant and every access and refresh token issued under it, so each step is one
//! script on one key (one Cluster slot) and a family's revocation is one `DEL`. The quota
//! charges live in the namespace's slot: each step charges first (or, for a redemption,
//! right after, undoing the step when refused), so nothing is stored uncharged.

use redis::Value;

use super::scripts::Lua;
use super::tenants::{Part, member};
use super::{Owner, RedisStore, hex, int, json_at, ms, text};
use crate::sessions::{
    AccessIssue, AccessTokenView, ClientGrant, CodeBinding, CodeRecord, CodeRedemption, GrantBinding, GrantId,
    GrantSubject, Issue, MAX_ROTATED_KEPT, ROTATED_PRUNED_TO, RecordKind, RefreshOutcome, RefreshRead, RefreshView,
    StoreError, grant_of, token_hash,
};

/// The owners a grant's records are charged to, and indexed under (so each goes with them).
/// A client's own grants are indexed under its quota's index (`cs:`) alone, which its
/// departure drops with its users' grants (`c:`): one index fewer to write per token.
fn owners(subject: &GrantSubject) -> Vec<Owner<'_>> {
    match subject {
        GrantSubject::Code(code) => vec![
            Owner::Identity { name: &code.identity.name, uid: &code.identity_uid, id: &code.identity_id },
            Owner::Client { client_id: &code.client_id },
            Owner::Provider { name: &code.provider },
        ],
        GrantSubject::Client(grant) => {
            vec![Owner::ClientGrants { client_id: &grant.client_id }, Owner::Provider { name: &grant.provider }]
        }
    }
}

/// Where a refresh moves its grant record's charge: its tokens' expiry rounded up to the
/// hour, so the rotations of the next hour find the charge covering them and leave the
/// indexes alone (a charge may outlast its record: a quota errs towards refusing, never
/// towards holding more than its share).
fn charge_step(until: i64) -> i64 {
    const STEP: i64 = 3600;
    until.saturating_add(STEP - 1).div_euclid(STEP).saturating_mul(STEP)
}

/// A token's field in its grant: `u:<hex>` (access) or `r:<hex>` (refresh).
fn field(kind: &str, hash: &[u8; 32]) -> String {
    format!("{kind}:{}", hex(hash))
}

/// The record key a token's charge names: its grant's key and the field's first 16 hex
/// digits, so each token of a grant is its own member.
fn part_key(key: &str, field: &str) -> String {
    format!("{key}|{}", field.get(..18).unwrap_or(field))
}

fn access_value(access: &AccessIssue, expires_at: i64) -> String {
    format!("{expires_at}:{}:{}:{}", access.issued_at, u8::from(access.jwt), access.scopes.join(" "))
}

/// An access field's value: expiry, issue time, JWT or not, scopes (empty: the grant's). A
/// value of the expiry alone is an older store's userinfo token.
fn parse_access(value: &str) -> Option<(i64, i64, bool, Vec<String>)> {
    let mut parts = value.splitn(4, ':');
    let expires_at = parts.next()?.parse().ok()?;
    let issued_at = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let jwt = parts.next() == Some("1");
    let scopes = parts.next().unwrap_or("").split_whitespace().map(str::to_owned).collect();
    Some((expires_at, issued_at, jwt, scopes))
}

/// A refresh field's value: idle expiry, issue time, rotation time (`-`: current).
fn parse_refresh(value: &str) -> Option<(i64, i64, Option<i64>)> {
    let mut parts = value.splitn(3, ':');
    let expires_at = parts.next()?.parse().ok()?;
    let issued_at = parts.next()?.parse().ok()?;
    let rotated = match parts.next()? {
        "-" => None,
        at => Some(at.parse().ok()?),
    };
    Some((expires_at, issued_at, rotated))
}

/// The grant a hash's `d` (code) or `k` (client grant) field holds.
fn subject_of(code: Option<&str>, client: Option<&str>) -> Result<GrantSubject, StoreError> {
    match (code.filter(|c| !c.is_empty()), client.filter(|c| !c.is_empty())) {
        (Some(c), _) => serde_json::from_str::<CodeRecord>(c)
            .map(|c| GrantSubject::Code(Box::new(c)))
            .map_err(|_| StoreError::Unavailable),
        (None, Some(k)) => serde_json::from_str(k).map(GrantSubject::Client).map_err(|_| StoreError::Unavailable),
        (None, None) => Err(StoreError::Unavailable),
    }
}

/// The `(name, value)` pairs of a reply from `start` on.
fn pairs(reply: &[Value], start: usize) -> Vec<(String, String)> {
    reply
        .get(start..)
        .unwrap_or_default()
        .chunks(2)
        .filter_map(|p| match p {
            [name, value] => Some((text(name)?.to_owned(), text(value)?.to_owned())),
            _ => None,
        })
        .collect()
}

/// A grant's script call: its operation (for the metrics), the kind of record a refusal
/// counts, the script, the grant's key.
#[derive(Clone, Copy)]
struct Step<'a> {
    op: &'static str,
    kind: RecordKind,
    script: &'a Lua,
    key: &'a str,
}

/// One refresh's script call on a Cluster: the grant's key, the presented token's field,
/// the request's time and reuse interval, until when the new tokens live, and the script's
/// arguments.
#[derive(Clone, Copy)]
struct RefreshCall<'a> {
    key: &'a str,
    presented: &'a str,
    now: i64,
    reuse_interval: i64,
    until: i64,
    args: &'a [String],
}

impl RedisStore {
    /// Charges every part to the grant's namespace and owners, or none.
    async fn charge_parts(&self, subject: &GrantSubject, parts: &[Part<'_>]) -> Result<(), StoreError> {
        self.charge_all(&owners(subject), parts).await
    }

    /// Moves the grant record's charge forward to `until` (its tokens' latest expiry). A
    /// failure leaves it charged until its earlier expiry only: logged, the tokens stand.
    async fn extend_grant_charge(&self, key: &str, subject: &GrantSubject, until: i64) {
        if let Err(e) = self.extend_charge(key, &subject.charge(), &owners(subject), until).await {
            tracing::warn!(error = %e, "a grant's quota charge ends before its tokens do");
        }
    }

    /// Gives back what `parts` were charged (a charge left behind holds room until its
    /// expiry: logged, not failed).
    async fn uncharge_parts(&self, subject: &GrantSubject, parts: &[Part<'_>]) {
        let members = parts.iter().map(|p| member(p.charge.bytes, &p.key)).collect();
        if let Err(e) = self.uncharge_members(subject.namespace(), &owners(subject), members).await {
            tracing::warn!(error = %e, "a grant's quota charges stay until their expiry");
        }
    }

    /// Gives back the charges of a grant's deleted fields, and of the grant record itself
    /// when `with_grant`.
    async fn uncharge_fields(&self, key: &str, subject: &GrantSubject, fields: &[(String, String)], with_grant: bool) {
        let mut members = Vec::with_capacity(fields.len() + 1);
        if with_grant {
            members.push(member(subject.charge().bytes, key));
        }
        for (name, value) in fields {
            let bytes = if name.starts_with("u:") {
                if !subject.tokens_charged_apart() {
                    continue;
                }
                let scopes = parse_access(value).map(|a| a.3).unwrap_or_default();
                subject.access_charge(&scopes).bytes
            } else if name.starts_with("r:") {
                subject.refresh_charge().bytes
            } else {
                continue;
            };
            members.push(member(bytes, &part_key(key, name)));
        }
        if let Err(e) = self.uncharge_members(subject.namespace(), &owners(subject), members).await {
            tracing::warn!(error = %e, "a revoked grant's quota charges stay until their expiry");
        }
    }

    /// The charges of what `issue` stores in the grant at `key`, its access token capped at
    /// `family` (the refresh family's absolute expiry).
    fn issue_parts<'a>(
        &self,
        key: &str,
        subject: &'a GrantSubject,
        issue: &Issue,
        family: Option<i64>,
    ) -> Vec<Part<'a>> {
        let cap = |t: i64| family.map_or(t, |f| t.min(f));
        let mut parts = vec![Part {
            key: part_key(key, &field("u", &issue.access.hash)),
            charge: subject.access_charge(&issue.access.scopes),
            expires_at: cap(issue.access.expires_at),
            everywhere: false,
        }];
        if let Some(r) = &issue.refresh {
            parts.push(Part {
                key: part_key(key, &field("r", &r.hash)),
                charge: subject.refresh_charge(),
                expires_at: cap(r.expires_at),
                everywhere: false,
            });
        }
        parts
    }

    pub async fn insert_code(&self, hash: [u8; 32], record: CodeRecord) -> Result<(), StoreError> {
        let binding = crate::sessions::binding_text(
            &record.namespace,
            &record.provider,
            &record.client_id,
            &record.redirect_uri,
            &record.pkce_binding(),
        );
        let expires_at = record.expires_at;
        let key = self.key(&hash, "grant");
        let json = serde_json::to_string(&record).map_err(|_| StoreError::Unavailable)?;
        let subject = GrantSubject::Code(Box::new(record));
        let parts = [Part { key: key.clone(), charge: subject.charge(), expires_at, everywhere: true }];
        let args = [json, binding, expires_at.to_string(), ms(expires_at)];
        self.put_charged("code_put", RecordKind::Code, &key, &subject, &parts, &args).await
    }

    /// On one node: runs `step`'s script with `args`, then the charge of `parts` to the
    /// grant's owners, as one script (see `PUT_CHARGED`); `None` when the store refused a
    /// script across slots before it ran, so the caller takes two steps.
    async fn run_charged<T: redis::FromRedisValue>(
        &self,
        step: Step<'_>,
        args: Vec<String>,
        subject: &GrantSubject,
        parts: &[Part<'_>],
    ) -> Result<Option<T>, StoreError> {
        let (charge_keys, charge_args) = self.counted(step.kind, self.charge_call(&owners(subject), parts))?;
        let keys: Vec<String> = std::iter::once(step.key.to_owned()).chain(charge_keys).collect();
        let args: Vec<String> = args.into_iter().chain(charge_args).collect();
        match self.counted(step.kind, self.run_script_on::<T>(step.op, step.script, &keys, &args).await) {
            Err(StoreError::Unavailable) if !self.one_keyspace() => Ok(None),
            answer => answer.map(Some),
        }
    }

    /// Stores a new grant (`grant_put` or `client_grant_put` with `args`) charged with
    /// `parts`: on one node in one script, on a Cluster charged first (and given back when
    /// the write fails).
    async fn put_charged(
        &self,
        op: &'static str,
        kind: RecordKind,
        key: &str,
        subject: &GrantSubject,
        parts: &[Part<'_>],
        args: &[String],
    ) -> Result<(), StoreError> {
        let client = matches!(subject, GrantSubject::Client(_));
        if self.one_keyspace() {
            let which = if client { "client" } else { "code" };
            let args = std::iter::once(which.to_owned()).chain(args.iter().cloned()).collect();
            let step = Step { op, kind, script: &self.scripts.put_charged, key };
            if let Some(answer) = self.run_charged::<Vec<i64>>(step, args, subject, parts).await? {
                return self.charged(&answer, parts);
            }
        }
        self.charge_parts(subject, parts).await?;
        let script = if client { &self.scripts.client_grant_put } else { &self.scripts.grant_put };
        let put = self.run_script::<i64>(op, script, key, args).await.map(drop);
        if let Err(e) = self.counted(kind, put) {
            self.uncharge_parts(subject, parts).await;
            return Err(e);
        }
        Ok(())
    }

    pub async fn redeem_code(
        &self,
        hash: &[u8; 32],
        binding: &CodeBinding<'_>,
        now: i64,
        issue: &Issue,
    ) -> Result<CodeRedemption, StoreError> {
        let mut texts = binding.texts().into_iter();
        let first = texts.next().unwrap_or_default();
        // The second PKCE answer (a verifier answers S256 or plain, whichever the code has).
        let second = texts.next().unwrap_or_else(|| first.clone());
        let family = issue.refresh.as_ref().map(|r| r.family_expires_at);
        let cap = |t: i64| family.map_or(t, |f| t.min(f));
        let access_field = field("u", &issue.access.hash);
        let access_expires = cap(issue.access.expires_at);
        let (refresh_field, refresh_value, refresh_expires) = match &issue.refresh {
            Some(r) => {
                (field("r", &r.hash), format!("{}:{}:-", cap(r.expires_at), issue.access.issued_at), cap(r.expires_at))
            }
            None => (String::new(), String::new(), access_expires),
        };
        let args = [
            first,
            now.to_string(),
            access_field.clone(),
            access_value(&issue.access, access_expires),
            ms(access_expires.max(refresh_expires)),
            second,
            refresh_field.clone(),
            refresh_value,
            family.map(|f| f.to_string()).unwrap_or_default(),
        ];
        let key = self.key(hash, "grant");
        let reply = self.run_script("code_redeem", &self.scripts.grant_redeem, &key, &args).await;
        let reply: Vec<Value> = self.counted(RecordKind::AccessToken, reply)?;
        match reply.first().and_then(int) {
            Some(0) => Ok(CodeRedemption::Unknown),
            Some(1) => Ok(CodeRedemption::WrongBinding),
            Some(2) => {
                let revoked = reply.get(1).and_then(int).and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
                if let Ok(subject) = subject_of(reply.get(2).and_then(text), None) {
                    self.uncharge_fields(&key, &subject, &pairs(&reply, 3), false).await;
                }
                Ok(CodeRedemption::Replayed { revoked })
            }
            Some(3) => {
                let record: CodeRecord = json_at(&reply, 1).ok_or(StoreError::Unavailable)?;
                let subject = GrantSubject::Code(Box::new(record));
                // The tokens it issued are charged to the same owners until their expiry;
                // refused at a quota, they are never handed out. The code record stays in the
                // grant as long as its tokens do: its charge, made until the code's expiry,
                // follows them in the same call, as the memory store charges a grant for its
                // whole life.
                let parts = self.issue_parts(&key, &subject, issue, family);
                let until = access_expires.max(refresh_expires);
                let moved = (key.as_str(), &subject.charge(), until);
                if let Err(e) = self.charge_moving(&owners(&subject), &parts, Some(moved)).await {
                    // Refused (or not answered): the tokens must not keep the grant alive
                    // uncharged until their expiry.
                    let fields = [access_field, refresh_field];
                    let undone = self.run_script::<i64>("code_undo", &self.scripts.grant_undo, &key, &fields).await;
                    if undone.is_err() {
                        tracing::warn!("a refused redemption's grant stays until its expiry");
                    }
                    return Err(e);
                }
                let GrantSubject::Code(record) = subject else { return Err(StoreError::Unavailable) };
                Ok(CodeRedemption::Fresh(record))
            }
            _ => Err(StoreError::Unavailable),
        }
    }

    pub async fn insert_client_grant(
        &self,
        id: GrantId,
        grant: ClientGrant,
        access: &AccessIssue,
    ) -> Result<(), StoreError> {
        let key = self.key(&id, "grant");
        let json = serde_json::to_string(&grant).map_err(|_| StoreError::Unavailable)?;
        let subject = GrantSubject::Client(grant);
        let access_field = field("u", &access.hash);
        // The grant and its one token are one record (`GrantSubject::charge`).
        let parts =
            [Part { key: key.clone(), charge: subject.charge(), expires_at: access.expires_at, everywhere: true }];
        let args = [json, access_field, access_value(access, access.expires_at), ms(access.expires_at)];
        self.put_charged("client_grant_put", RecordKind::ClientGrant, &key, &subject, &parts, &args).await
    }

    /// A token's field, its grant and the family's expiry, in one `HMGET`.
    async fn read(
        &self,
        op: &'static str,
        key: &str,
        field: &str,
    ) -> Result<Option<(String, GrantSubject, Option<i64>)>, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key).arg(field).arg("d").arg("k").arg("f");
        let (value, code, client, family): (Option<String>, Option<String>, Option<String>, Option<i64>) =
            self.run(op, cmd).await?;
        let Some(value) = value else { return Ok(None) };
        Ok(Some((value, subject_of(code.as_deref(), client.as_deref())?, family)))
    }

    pub async fn access_token(&self, token: &str, now: i64) -> Result<Option<AccessTokenView>, StoreError> {
        let Some(id) = grant_of(token) else { return Ok(None) };
        let key = self.key(&id, "grant");
        let Some((value, grant, _)) = self.read("access_get", &key, &field("u", &token_hash(token))).await? else {
            return Ok(None);
        };
        let (expires_at, issued_at, jwt, scopes) = parse_access(&value).ok_or(StoreError::Unavailable)?;
        if now >= expires_at {
            return Ok(None);
        }
        let scopes = if scopes.is_empty() { grant.scopes().to_vec() } else { scopes };
        Ok(Some(AccessTokenView { grant, scopes, expires_at, issued_at, jwt }))
    }

    pub async fn refresh_token(&self, token: &str, now: i64) -> Result<Option<RefreshView>, StoreError> {
        let Some(id) = grant_of(token) else { return Ok(None) };
        let key = self.key(&id, "grant");
        let Some((value, grant, family)) = self.read("refresh_get", &key, &field("r", &token_hash(token))).await?
        else {
            return Ok(None);
        };
        let (expires_at, issued_at, rotated) = parse_refresh(&value).ok_or(StoreError::Unavailable)?;
        let Some(family_expires_at) = family else { return Ok(None) };
        // A rotated token is read until its family expires, however idle: a late reuse must
        // still be recognised as one.
        if (rotated.is_none() && now >= expires_at) || now >= family_expires_at {
            return Ok(None);
        }
        self.grant_cache.remember(id, &grant, family_expires_at, now);
        Ok(Some(RefreshView { grant, expires_at, family_expires_at, issued_at, rotated_at: rotated }))
    }

    /// `token` as a refresh reads it: from the grants this replica remembers, else read.
    pub async fn refresh_read(&self, token: &str, now: i64) -> Result<Option<RefreshRead>, StoreError> {
        let Some(id) = grant_of(token) else { return Ok(None) };
        if let Some((grant, family_expires_at)) = self.grant_cache.get(&id, now) {
            let view =
                RefreshView { grant, expires_at: family_expires_at, family_expires_at, issued_at: 0, rotated_at: None };
            return Ok(Some(RefreshRead::Remembered(view)));
        }
        Ok(self.refresh_token(token, now).await?.map(RefreshRead::Checked))
    }

    /// Rotates `token` of `grant` (the grant the caller read it under: its owners, for the
    /// charges, and its binding, which never change). On one node a script decides under its
    /// key's atomicity and charges what it issues in the same step; on a Cluster the charges
    /// come first and those of what it did not issue are given back.
    pub async fn refresh(
        &self,
        token: &str,
        grant: &GrantSubject,
        binding: &GrantBinding<'_>,
        now: i64,
        reuse_interval: i64,
        issue: &Issue,
    ) -> Result<RefreshOutcome, StoreError> {
        let Some(id) = grant_of(token) else { return Ok(RefreshOutcome::Unknown) };
        if !grant.bound_to(binding) {
            return Ok(RefreshOutcome::WrongBinding);
        }
        let key = self.key(&id, "grant");
        let family = issue.refresh.as_ref().map_or(issue.access.expires_at, |r| r.family_expires_at);
        let access_expires = issue.access.expires_at.min(family);
        let (new_field, new_value, refresh_expires) = match &issue.refresh {
            Some(r) => {
                let at = r.expires_at.min(family);
                (field("r", &r.hash), format!("{at}:{}:-", issue.access.issued_at), at)
            }
            None => (String::new(), String::new(), access_expires),
        };
        let until = access_expires.max(refresh_expires);
        let presented = field("r", &token_hash(token));
        let args = [
            presented.clone(),
            now.to_string(),
            reuse_interval.to_string(),
            field("u", &issue.access.hash),
            access_value(&issue.access, access_expires),
            new_field,
            new_value,
            ms(until),
            MAX_ROTATED_KEPT.to_string(),
            ROTATED_PRUNED_TO.to_string(),
        ];
        let parts = self.issue_parts(&key, grant, issue, Some(family));
        let mut reply = None;
        if self.one_keyspace() {
            let grant_member = member(grant.charge().bytes, &key);
            let args = [grant_member, ms(charge_step(until))].into_iter().chain(args.iter().cloned()).collect();
            let kind = RecordKind::AccessToken;
            let step = Step { op: "refresh", kind, script: &self.scripts.grant_refresh_charged, key: &key };
            reply = self.run_charged(step, args, grant, &parts).await?;
        }
        let reply: Vec<Value> = match reply {
            Some(reply) => reply,
            None => {
                let call = RefreshCall { key: &key, presented: &presented, now, reuse_interval, until, args: &args };
                self.refresh_charged_first(&call, grant, &parts).await?
            }
        };
        match reply.first().and_then(int) {
            Some(1) => Ok(RefreshOutcome::Rotated(grant.clone())),
            Some(2) => {
                self.grant_cache.forget(&id);
                self.uncharge_fields(&key, grant, &pairs(&reply, 1), true).await;
                Ok(RefreshOutcome::Reused { revoked: true })
            }
            Some(code @ 11..=12) => {
                let at = reply.get(1).and_then(int).unwrap_or(1);
                self.charged(&[code - 10, at], &parts)?;
                Err(StoreError::Unavailable)
            }
            _ => Ok(RefreshOutcome::Unknown),
        }
    }

    /// A Cluster's refresh: the new tokens are charged (unless the token reads as reused:
    /// a reuse must revoke even at a full quota), the script run, and the charges of what it
    /// did not issue given back; a rotation moves the grant record's charge to `until`.
    async fn refresh_charged_first(
        &self,
        call: &RefreshCall<'_>,
        grant: &GrantSubject,
        parts: &[Part<'_>],
    ) -> Result<Vec<Value>, StoreError> {
        let RefreshCall { key, presented, now, reuse_interval, until, args } = *call;
        let Some((value, _, _)) = self.read("refresh_read", key, presented).await? else { return Ok(Vec::new()) };
        let (_, _, rotated) = parse_refresh(&value).ok_or(StoreError::Unavailable)?;
        let reuse = rotated.is_some_and(|at| now >= at.saturating_add(reuse_interval));
        let parts = if reuse { &[][..] } else { parts };
        self.charge_parts(grant, parts).await?;
        let reply = self.run_script("refresh", &self.scripts.grant_refresh, key, args).await;
        let reply: Vec<Value> = match self.counted(RecordKind::AccessToken, reply) {
            Ok(reply) => reply,
            Err(e) => {
                self.uncharge_parts(grant, parts).await;
                return Err(e);
            }
        };
        match reply.first().and_then(int) {
            Some(1) => self.extend_grant_charge(key, grant, until).await,
            _ => self.uncharge_parts(grant, parts).await,
        }
        Ok(reply)
    }

    pub async fn revoke_access(&self, token: &str) -> Result<bool, StoreError> {
        let Some(id) = grant_of(token) else { return Ok(false) };
        let key = self.key(&id, "grant");
        let access = field("u", &token_hash(token));
        let reply: Vec<Value> =
            self.run_script("access_revoke", &self.scripts.access_revoke, &key, std::slice::from_ref(&access)).await?;
        let Some(value) = reply.first().and_then(text) else { return Ok(false) };
        if let Ok(subject) = subject_of(reply.get(1).and_then(text), reply.get(2).and_then(text)) {
            // A client grant went whole with its one token (see `ACCESS_REVOKE`).
            let whole = !subject.tokens_charged_apart();
            self.uncharge_fields(&key, &subject, &[(access, value.to_owned())], whole).await;
        }
        Ok(true)
    }

    pub async fn revoke_grant(&self, token: &str) -> Result<bool, StoreError> {
        let Some(id) = grant_of(token) else { return Ok(false) };
        let key = self.key(&id, "grant");
        let hash = token_hash(token);
        let args = [field("u", &hash), field("r", &hash)];
        let reply: Vec<Value> = self.run_script("grant_revoke", &self.scripts.grant_revoke, &key, &args).await?;
        if !reply.is_empty() {
            self.grant_cache.forget(&id);
        }
        Ok(self.gone_grant(&key, &reply).await)
    }

    /// Deletes the grant at `key` whole, giving back the charges of its record and its
    /// tokens; whether it was there. A departed owner takes its grants so.
    pub(super) async fn take_grant(&self, key: &str) -> Result<bool, StoreError> {
        let reply: Vec<Value> = self.run_script("grant_take", &self.scripts.grant_take, key, &[]).await?;
        Ok(self.gone_grant(key, &reply).await)
    }

    /// Gives back the charges of a deleted grant from its fields (`HGETALL`'s reply);
    /// whether there was one.
    async fn gone_grant(&self, key: &str, reply: &[Value]) -> bool {
        if reply.is_empty() {
            return false;
        }
        let fields = pairs(reply, 0);
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        if let Ok(subject) = subject_of(get("d"), get("k")) {
            self.uncharge_fields(key, &subject, &fields, true).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_read_back() {
        let access =
            AccessIssue { hash: [1; 32], expires_at: 9, scopes: vec!["a".into(), "b".into()], jwt: true, issued_at: 3 };
        assert_eq!(parse_access(&access_value(&access, 7)), Some((7, 3, true, vec!["a".into(), "b".into()])));
        assert_eq!(parse_access("12"), Some((12, 0, false, vec![])), "an older userinfo token");
        assert_eq!(parse_access("12:3:0:"), Some((12, 3, false, vec![])));
        assert_eq!(parse_refresh("12:3:-"), Some((12, 3, None)));
        assert_eq!(parse_refresh("12:3:5"), Some((12, 3, Some(5))));
        assert_eq!(parse_refresh("12"), None);
        assert_eq!(part_key("k", &field("u", &[0xab; 32])), "k|u:abababababababab");
        assert_eq!((charge_step(3600), charge_step(3601), charge_step(7199)), (3600, 7200, 7200));
    }
}
