//! Azure storage emulators (Azurite) reached through an explicit endpoint.
//!
//! object_store treats an Azure store as an emulator only with `use_emulator`, which takes the
//! emulator's URL from `AZURITE_BLOB_STORAGE_URL` alone. An Airflow `wasb` connection names
//! Azurite by its account URL instead (`http://127.0.0.1:10000/devstoreaccount1`, the account in
//! the path), so the store is built with that URL as its endpoint, and object_store then sends
//! `startFrom` on listings from an offset. Azurite ignores `startFrom` and lists from the first
//! blob: delta-rs, listing the log from the version after the one it has, gets every commit from
//! version 0 and fails with "Invalid table version". [`ClientOffset`] filters such listings on
//! the client, as object_store does itself in emulator mode.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Whether an Azure `endpoint` names an emulator: a path-style account URL (the account as the
/// first path segment, as Azurite serves it). Service endpoints (`https://<account>.blob...`,
/// private links, sovereign clouds) have the account in the host and an empty path.
pub fn is_path_style(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|u| !u.path().trim_matches('/').is_empty())
}

/// An object store whose offset listings are filtered on the client (everything else is passed
/// through): for stores that ignore the service's offset parameter (see the module docs).
#[derive(Debug)]
pub struct ClientOffset(pub Arc<dyn ObjectStore>);

impl std::fmt::Display for ClientOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientOffset({})", self.0)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for ClientOffset {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.0.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.0.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let offset = offset.clone();
        self.0
            .list(prefix)
            .try_filter(move |m| futures::future::ready(m.location > offset))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.0.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.0.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    /// A store that, like Azurite, ignores the offset of offset listings.
    #[derive(Debug)]
    struct IgnoresOffset(InMemory);

    impl std::fmt::Display for IgnoresOffset {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("IgnoresOffset")
        }
    }

    #[async_trait]
    impl ObjectStore for IgnoresOffset {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            self.0.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.0.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            self.0.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.0.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.0.list(p)
        }
        fn list_with_offset(
            &self,
            p: Option<&Path>,
            _offset: &Path,
        ) -> BoxStream<'static, Result<ObjectMeta>> {
            self.0.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.0.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.0.copy_opts(f, t, o).await
        }
    }

    #[tokio::test]
    async fn offset_listings_are_filtered_on_the_client() {
        let inner = Arc::new(IgnoresOffset(InMemory::new()));
        for v in 0..3 {
            let p = Path::from(format!("t/_delta_log/{v:020}.json"));
            inner.put(&p, "{}".into()).await.unwrap();
        }
        let names = |s: BoxStream<'static, Result<ObjectMeta>>| async move {
            s.map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        };
        let prefix = Path::from("t/_delta_log");
        let offset = Path::from(format!("t/_delta_log/{:020}.json", 0));
        // The wrapped store returns version 0 although it is not after the offset.
        assert_eq!(
            names(inner.list_with_offset(Some(&prefix), &offset))
                .await
                .len(),
            3
        );
        let store = ClientOffset(inner);
        let listed = names(store.list_with_offset(Some(&prefix), &offset)).await;
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed
            .iter()
            .all(|n| !n.ends_with(&format!("{:020}.json", 0))));
    }

    #[test]
    fn path_style_endpoints_are_emulators() {
        assert!(is_path_style("http://127.0.0.1:10000/devstoreaccount1"));
        assert!(is_path_style("http://azurite:10000/devstoreaccount1/"));
        assert!(!is_path_style("https://acct.blob.core.windows.net"));
        assert!(!is_path_style("https://acct.blob.core.windows.net/"));
        assert!(!is_path_style("not a url"));
    }
}
