//! A private XDG_RUNTIME_DIR on headless machines, set before the first driver call.

/// On a machine without `XDG_RUNTIME_DIR` (a container, a CI job, ssh without a login session), points it at a
/// private directory, `<tmp>/pixelcnn-runtime-<uid>` (created with mode 0700, used only if this user owns it and
/// nobody else can enter it), so that the drivers do not print `error: XDG_RUNTIME_DIR is invalid or not set` on
/// every device open. Call before the first driver call; it acts once per process.
pub fn ensure_runtime_dir() {
    #[cfg(unix)]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
            if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|v| !v.is_empty()) {
                return;
            }
            let uid = unsafe { libc::getuid() };
            let dir = std::env::temp_dir().join(format!("pixelcnn-runtime-{uid}"));
            let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                return;
            };
            if !meta.is_dir() || meta.uid() != uid {
                return;
            }
            if meta.mode() & 0o077 != 0
                && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_err()
            {
                return;
            }
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        });
    }
}
