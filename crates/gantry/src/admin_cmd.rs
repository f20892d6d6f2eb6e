//! `gantry user ...` and `gantry role ...`: manage identities and roles in
//! the data directory's security file. A running broker picks changes up
//! within a second; every change is written to the audit log (durably)
//! before the command reports success.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use gantry_security::audit::{Actor, ActorKind, AuditEvent, Category};
use gantry_security::password::{generate_password, hash_password};
use gantry_security::role::builtin_roles;
use gantry_security::{Identity, IdentityKind, Permission, Role, SecurityStore, StoreError};

use crate::config::GantryConfig;

/// Which data directory to manage: from a config file or given directly.
#[derive(Args, Debug, Clone)]
pub struct Location {
    /// The config file whose `data_dir` to use.
    #[arg(long, short, conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// The data directory itself.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Location {
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        match (&self.config, &self.data_dir) {
            (_, Some(dir)) => Ok(dir.clone()),
            (Some(config), None) => Ok(GantryConfig::load(config)?.data_dir),
            (None, None) => bail!("say which data directory: --config FILE or --data-dir DIR"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Human,
    Service,
    Device,
}

impl From<KindArg> for IdentityKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Human => IdentityKind::Human,
            KindArg::Service => IdentityKind::Service,
            KindArg::Device => IdentityKind::Device,
        }
    }
}

/// Where a new password comes from.
#[derive(Args, Debug, Clone)]
pub struct PasswordSource {
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "generate_password")]
    pub password_stdin: bool,
    /// Generate a strong password and print it once.
    #[arg(long)]
    pub generate_password: bool,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an identity (a person, a service or a device).
    Add {
        name: String,
        /// A role to hold (repeatable): admin, ot-engineer, it-analyst,
        /// security-officer, device, or a site role.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[arg(long, value_enum, default_value = "human")]
        kind: KindArg,
        #[command(flatten)]
        password: PasswordSource,
        /// May also log in with a client certificate whose common name is NAME.
        #[arg(long)]
        certificate: bool,
        /// No password at all (certificate login only; needs --certificate).
        #[arg(long, requires = "certificate", conflicts_with_all = ["password_stdin", "generate_password"])]
        no_password: bool,
        /// The emergency account: always audited, not slowed by the
        /// failed-login back-off. See docs/security.md.
        #[arg(long)]
        break_glass: bool,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        location: Location,
    },
    /// Change an identity's password.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordSource,
        #[command(flatten)]
        location: Location,
    },
    /// Delete an identity.
    Remove {
        name: String,
        #[command(flatten)]
        location: Location,
    },
    /// Stop an identity from logging in or acting, without deleting it.
    Disable {
        name: String,
        #[command(flatten)]
        location: Location,
    },
    /// Undo `disable`.
    Enable {
        name: String,
        #[command(flatten)]
        location: Location,
    },
    /// Give an identity one more role.
    Grant {
        name: String,
        role: String,
        #[command(flatten)]
        location: Location,
    },
    /// Take a role away from an identity.
    Revoke {
        name: String,
        role: String,
        #[command(flatten)]
        location: Location,
    },
    /// List identities (never their password hashes).
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        location: Location,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// List built-in and site roles with their permissions.
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        location: Location,
    },
    /// Define a site role.
    Add {
        name: String,
        /// A permission ACTION:PATTERN (repeatable), e.g.
        /// `subscribe:acme/dallas/#` or `publish:acme/+/+/+/${identity}/#`.
        #[arg(long = "allow", required = true)]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        location: Location,
    },
    /// Delete a site role that no identity holds.
    Remove {
        name: String,
        #[command(flatten)]
        location: Location,
    },
}

fn now_ms() -> u64 {
    gantry_broker::message::now_ms()
}

/// Who runs the command, as the audit log records it.
fn cli_actor() -> Actor {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown-os-user".to_owned());
    Actor {
        id: format!("os:{user}"),
        kind: ActorKind::Human,
        auth_method: Some("local-cli".to_owned()),
    }
}

/// Writes the change to the audit log durably (directly, or through the
/// running broker's inbox) before the command reports success.
fn audit(data_dir: &Path, event: AuditEvent) -> anyhow::Result<()> {
    gantry_security::audit::submit(&data_dir.join("audit"), event)
        .context("the change was made but could not be written to the audit log")?;
    Ok(())
}

fn read_password(source: &PasswordSource, name: &str) -> anyhow::Result<(String, bool)> {
    if source.generate_password {
        return Ok((generate_password()?, true));
    }
    if source.password_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        return Ok((password, false));
    }
    let first = rpassword::prompt_password(format!("New password for {name}: "))?;
    let second = rpassword::prompt_password("Repeat it: ")?;
    if first != second {
        bail!("the two passwords differ");
    }
    Ok((first, false))
}

fn not_found(name: &str) -> StoreError {
    StoreError::Refused(format!(
        "no identity named {name:?} (see `gantry user list`)"
    ))
}

pub fn run_user(cmd: &UserCommand) -> anyhow::Result<ExitCode> {
    let actor = cli_actor();
    match cmd {
        UserCommand::Add {
            name,
            roles,
            kind,
            password,
            certificate,
            no_password,
            break_glass,
            description,
            location,
        } => {
            let data_dir = location.data_dir()?;
            let store = SecurityStore::in_data_dir(&data_dir);
            if store.load()?.identity(name).is_some() {
                bail!("identity {name:?} already exists (use `gantry user passwd` or `grant`)");
            }
            let (hash, shown) = if *no_password {
                (None, None)
            } else {
                let (password, generated) = read_password(password, name)?;
                let hash =
                    hash_password(&password).with_context(|| format!("password for {name:?}"))?;
                (Some(hash), generated.then_some(password))
            };
            let now = now_ms();
            store.update(|f| {
                if f.identity(name).is_some() {
                    return Err(StoreError::Refused(format!(
                        "identity {name:?} already exists"
                    )));
                }
                f.identities.push(Identity {
                    name: name.clone(),
                    kind: (*kind).into(),
                    roles: roles.clone(),
                    password: hash,
                    certificate: *certificate,
                    disabled: false,
                    break_glass: *break_glass,
                    description: description.clone(),
                    created_ms: now,
                    updated_ms: now,
                });
                Ok(())
            })?;
            audit(
                &data_dir,
                AuditEvent::new(Category::UserAdmin, "user-added", actor, "add-user", true)
                    .target(name.clone())
                    .details(serde_json::json!({
                        "roles": roles,
                        "kind": IdentityKind::from(*kind).as_str(),
                        "certificate": certificate,
                        "break_glass": break_glass,
                        "password": !no_password,
                    })),
            )?;
            println!("identity {name:?} added with role(s) {}", roles.join(", "));
            if let Some(p) = shown {
                println!("generated password (shown once): {p}");
            }
            if *break_glass {
                println!(
                    "break-glass account: every use is audited and logged as a warning; keep its password sealed"
                );
            }
        }
        UserCommand::Passwd {
            name,
            password,
            location,
        } => {
            let data_dir = location.data_dir()?;
            let store = SecurityStore::in_data_dir(&data_dir);
            if store.load()?.identity(name).is_none() {
                return Err(not_found(name).into());
            }
            let (password, generated) = read_password(password, name)?;
            let hash =
                hash_password(&password).with_context(|| format!("password for {name:?}"))?;
            let now = now_ms();
            store.update(|f| {
                let i = f.identity_mut(name).ok_or_else(|| not_found(name))?;
                i.password = Some(hash);
                i.updated_ms = now;
                Ok(())
            })?;
            audit(
                &data_dir,
                AuditEvent::new(
                    Category::UserAdmin,
                    "password-changed",
                    actor,
                    "change-password",
                    true,
                )
                .target(name.clone()),
            )?;
            println!("password of {name:?} changed");
            if generated {
                println!("generated password (shown once): {password}");
            }
        }
        UserCommand::Remove { name, location } => {
            let data_dir = location.data_dir()?;
            SecurityStore::in_data_dir(&data_dir).update(|f| {
                let before = f.identities.len();
                f.identities.retain(|i| &i.name != name);
                if f.identities.len() == before {
                    return Err(not_found(name));
                }
                Ok(())
            })?;
            audit(
                &data_dir,
                AuditEvent::new(
                    Category::UserAdmin,
                    "user-removed",
                    actor,
                    "remove-user",
                    true,
                )
                .target(name.clone()),
            )?;
            println!("identity {name:?} removed");
        }
        UserCommand::Disable { name, location } | UserCommand::Enable { name, location } => {
            let disable = matches!(cmd, UserCommand::Disable { .. });
            let data_dir = location.data_dir()?;
            let now = now_ms();
            SecurityStore::in_data_dir(&data_dir).update(|f| {
                let i = f.identity_mut(name).ok_or_else(|| not_found(name))?;
                i.disabled = disable;
                i.updated_ms = now;
                Ok(())
            })?;
            let (event, action) = if disable {
                ("user-disabled", "disable-user")
            } else {
                ("user-enabled", "enable-user")
            };
            audit(
                &data_dir,
                AuditEvent::new(Category::UserAdmin, event, actor, action, true)
                    .target(name.clone()),
            )?;
            println!(
                "identity {name:?} {}",
                if disable { "disabled" } else { "enabled" }
            );
        }
        UserCommand::Grant {
            name,
            role,
            location,
        }
        | UserCommand::Revoke {
            name,
            role,
            location,
        } => {
            let grant = matches!(cmd, UserCommand::Grant { .. });
            let data_dir = location.data_dir()?;
            let now = now_ms();
            SecurityStore::in_data_dir(&data_dir).update(|f| {
                let i = f.identity_mut(name).ok_or_else(|| not_found(name))?;
                if grant {
                    if !i.roles.contains(role) {
                        i.roles.push(role.clone());
                    }
                } else {
                    let before = i.roles.len();
                    i.roles.retain(|r| r != role);
                    if i.roles.len() == before {
                        return Err(StoreError::Refused(format!(
                            "identity {name:?} does not hold role {role:?}"
                        )));
                    }
                }
                i.updated_ms = now;
                Ok(())
            })?;
            let (event, action) = if grant {
                ("role-granted", "grant-role")
            } else {
                ("role-revoked", "revoke-role")
            };
            audit(
                &data_dir,
                AuditEvent::new(Category::UserAdmin, event, actor, action, true)
                    .target(name.clone())
                    .details(serde_json::json!({ "role": role })),
            )?;
            println!(
                "{name:?} {} role {role:?}",
                if grant {
                    "now holds"
                } else {
                    "no longer holds"
                }
            );
        }
        UserCommand::List { format, location } => {
            let file = SecurityStore::in_data_dir(&location.data_dir()?).load()?;
            match format {
                Format::Json => {
                    let list: Vec<_> = file
                        .identities
                        .iter()
                        .map(|i| {
                            serde_json::json!({
                                "name": i.name,
                                "kind": i.kind.as_str(),
                                "roles": i.roles,
                                "password": i.password.is_some(),
                                "certificate": i.certificate,
                                "disabled": i.disabled,
                                "break_glass": i.break_glass,
                                "description": i.description,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(list));
                }
                Format::Text => {
                    if file.identities.is_empty() {
                        println!(
                            "no identities yet: nobody can log in (add one with `gantry user add`)"
                        );
                    }
                    for i in &file.identities {
                        let mut flags = Vec::new();
                        if i.password.is_some() {
                            flags.push("password");
                        }
                        if i.certificate {
                            flags.push("certificate");
                        }
                        if i.disabled {
                            flags.push("DISABLED");
                        }
                        if i.break_glass {
                            flags.push("BREAK-GLASS");
                        }
                        println!(
                            "{:<24} {:<8} roles: {:<30} login: {}",
                            i.name,
                            i.kind.as_str(),
                            i.roles.join(","),
                            flags.join(",")
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_role(cmd: &RoleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RoleCommand::List { format, location } => {
            let file = SecurityStore::in_data_dir(&location.data_dir()?).load()?;
            let roles: Vec<Role> = builtin_roles().into_iter().chain(file.roles).collect();
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&roles).context("cannot encode the roles")?
                ),
                Format::Text => {
                    for role in &roles {
                        let origin = if role.builtin { "built-in" } else { "site" };
                        println!("{} ({origin}): {}", role.name, role.description);
                        for p in &role.permissions {
                            println!("    {p}");
                        }
                    }
                }
            }
        }
        RoleCommand::Add {
            name,
            permissions,
            description,
            location,
        } => {
            let data_dir = location.data_dir()?;
            let parsed: Vec<Permission> = permissions
                .iter()
                .map(|p| p.parse().with_context(|| format!("--allow {p}")))
                .collect::<anyhow::Result<_>>()?;
            SecurityStore::in_data_dir(&data_dir).update(|f| {
                if f.role_exists(name) {
                    return Err(StoreError::Refused(format!("role {name:?} already exists")));
                }
                f.roles.push(Role {
                    name: name.clone(),
                    description: description.clone(),
                    permissions: parsed.clone(),
                    builtin: false,
                });
                Ok(())
            })?;
            audit(
                &data_dir,
                AuditEvent::new(
                    Category::RoleAdmin,
                    "role-added",
                    cli_actor(),
                    "add-role",
                    true,
                )
                .target(name.clone())
                .details(serde_json::json!({ "permissions": permissions })),
            )?;
            println!("role {name:?} added");
        }
        RoleCommand::Remove { name, location } => {
            let data_dir = location.data_dir()?;
            SecurityStore::in_data_dir(&data_dir).update(|f| {
                if gantry_security::role::builtin_role_names().any(|b| b == name) {
                    return Err(StoreError::Refused(format!(
                        "role {name:?} is built in and cannot be removed"
                    )));
                }
                let holders: Vec<&str> = f
                    .identities
                    .iter()
                    .filter(|i| i.roles.contains(name))
                    .map(|i| i.name.as_str())
                    .collect();
                if !holders.is_empty() {
                    return Err(StoreError::Refused(format!(
                        "role {name:?} is held by {}: revoke it first",
                        holders.join(", ")
                    )));
                }
                let before = f.roles.len();
                f.roles.retain(|r| &r.name != name);
                if f.roles.len() == before {
                    return Err(StoreError::Refused(format!("no site role named {name:?}")));
                }
                Ok(())
            })?;
            audit(
                &data_dir,
                AuditEvent::new(
                    Category::RoleAdmin,
                    "role-removed",
                    cli_actor(),
                    "remove-role",
                    true,
                )
                .target(name.clone()),
            )?;
            println!("role {name:?} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
