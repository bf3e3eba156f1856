package source

// BuildKit's attribute keys (solver/pb/attr.go), all string-valued. A key a
// scheme does not know is ignored, as BuildKit ignores it.
const (
	AttrImageResolveMode = "image.resolvemode"
	AttrImageRecordType  = "image.recordtype"
	AttrImageLayerLimit  = "image.layerlimit"
	AttrImageChecksum    = "image.checksum"

	AttrOCILayoutSessionID  = "oci.session"
	AttrOCILayoutStoreID    = "oci.store"
	AttrOCILayoutLayerLimit = "oci.layerlimit"

	AttrKeepGitDir             = "git.keepgitdir"
	AttrFullRemoteURL          = "git.fullurl"
	AttrAuthHeaderSecret       = "git.authheadersecret"
	AttrAuthTokenSecret        = "git.authtokensecret"
	AttrKnownSSHHosts          = "git.knownsshhosts"
	AttrMountSSHSock           = "git.mountsshsock"
	AttrGitChecksum            = "git.checksum"
	AttrGitSkipSubmodules      = "git.skipsubmodules"
	AttrGitMTime               = "git.mtime"
	AttrGitFetchByCommit       = "git.fetchbycommit"
	AttrGitBundle              = "git.bundle"
	AttrGitCheckoutBundle      = "git.checkoutbundle"
	AttrGitSignaturePubKey     = "git.sig.pubkey"
	AttrGitSignatureRejectExp  = "git.sig.rejectexpired"
	AttrGitSignatureRequireTag = "git.sig.requiresignedtag"
	AttrGitSignatureIgnoreTag  = "git.sig.ignoresignedtag"

	AttrLocalSessionID          = "local.session"
	AttrLocalUniqueID           = "local.unique"
	AttrIncludePatterns         = "local.includepattern"
	AttrFollowPaths             = "local.followpaths"
	AttrExcludePatterns         = "local.excludepatterns"
	AttrSharedKeyHint           = "local.sharedkeyhint"
	AttrLocalDiffer             = "local.differ"
	AttrMetadataTransfer        = "local.metadatatransfer"
	AttrMetadataTransferExclude = "local.metadatatransferexclude"

	AttrHTTPChecksum         = "http.checksum"
	AttrHTTPFilename         = "http.filename"
	AttrHTTPPerm             = "http.perm"
	AttrHTTPUID              = "http.uid"
	AttrHTTPGID              = "http.gid"
	AttrHTTPAuthHeaderSecret = "http.authheadersecret"
	AttrHTTPHeaderPrefix     = "http.header."
	AttrHTTPSignaturePubKey  = "http.sig.pubkey"
	AttrHTTPSignature        = "http.sig.signature"
)

// Stevedore's own attribute keys; BuildKit ignores them, as it ignores
// every key a scheme does not know.
const (
	// AttrImageTagMaxAge is the longest a tag's resolution may have been
	// made before the request for the fleet's memory of it to answer
	// (a Go duration, "0" to ask the registry). It can only ask for
	// fresher answers than the fleet's tag max age, never staler ones.
	AttrImageTagMaxAge = "image.tagmaxage"
)

// Schemes: every scheme BuildKit's source manager registers.
const (
	SchemeDockerImage     = "docker-image"
	SchemeDockerImageBlob = "docker-image+blob"
	SchemeOCILayout       = "oci-layout"
	SchemeOCILayoutBlob   = "oci-layout+blob"
	SchemeGit             = "git"
	SchemeHTTP            = "http"
	SchemeHTTPS           = "https"
	SchemeLocal           = "local"
)
