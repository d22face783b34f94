package v1alpha1

// The names vmdkpop writes on objects (annotations, labels, finalizers)
// and the constant reasons of its conditions and events: the API users
// and tools read, in one place.

// Annotations and labels on a PVC the populator fills.
const (
	// AnnPhase on the user's PVC: Pending, Populating, Succeeded or Failed.
	AnnPhase = "storage.vmdkpop.io/populator-phase"
	// AnnProgress on the user's PVC: the populating Job's progress.
	AnnProgress = "storage.vmdkpop.io/populator-progress"
	// AnnMessage on the user's PVC: why it waits or failed.
	AnnMessage = "storage.vmdkpop.io/populator-message"
	// AnnVolume on the user's PVC: the populated PV handed to it.
	AnnVolume = "storage.vmdkpop.io/populated-volume"
	// LabelPopulates marks a prime PVC and its Job with the UID of the
	// PVC they populate.
	LabelPopulates = "storage.vmdkpop.io/populates"
	// PopulatorFinalizer keeps the user's PVC until the prime PVC and Job
	// are cleaned up.
	PopulatorFinalizer = "storage.vmdkpop.io/populate"
)

// A population's attempts, on the user's PVC. Each attempt has a prime
// PVC and a Job of its own (their names carry the attempt number), so a
// fresh attempt never meets what is left of an old one.
const (
	// AnnPopAttempt: the current attempt's number (absent: 0).
	AnnPopAttempt = "storage.vmdkpop.io/populator-attempt"
	// AnnPopRetries: the fresh attempts the controller started after
	// transient failures, since the PVC was created or last retried by
	// the AnnotationRetry annotation.
	AnnPopRetries = "storage.vmdkpop.io/populator-retries"
	// AnnPopFailedAt: when the current attempt's Job failed (RFC 3339).
	// Set once per attempt: the failure is reported once, and a failed
	// Job the TTL controller removed is not run again.
	AnnPopFailedAt = "storage.vmdkpop.io/populator-failed-at"
	// AnnPopRetryAt: when the controller starts the next attempt (RFC
	// 3339); absent on a failed attempt: not retried (a permanent
	// failure, or the retry limit reached).
	AnnPopRetryAt = "storage.vmdkpop.io/populator-retry-at"
	// AnnPopRetried echoes the AnnotationRetry value the current attempt
	// was started for.
	AnnPopRetried = "storage.vmdkpop.io/populator-retried"
	// LabelPrime marks a populate Job with the UID of the prime PVC it
	// writes: a Job is used only with that prime.
	LabelPrime = "storage.vmdkpop.io/prime"
)

// LabelManagedBy (value ManagedBy) is on every Job, Job pod and PVC the
// controllers create: the manager caches only the Jobs and pods carrying
// it, so a cluster's other thousands cost it nothing. A label is anyone's
// to set: it narrows what is watched, never what is trusted (children are
// known by their recorded UIDs).
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "vmdkpop"
)

// LabelImage marks the Jobs and PVCs of an image (its value: the image's
// name, hence at most 63 characters).
const LabelImage = "storage.vmdkpop.io/image"

// Annotations on an owner recording the UIDs of the children the
// controller created for it: only those objects are ever used.
const (
	// On a user's PVC being populated.
	AnnPrimeUID       = "storage.vmdkpop.io/prime-uid"
	AnnPopulateJobUID = "storage.vmdkpop.io/populate-job-uid"
	// On a VMDKImage.
	AnnClaimUID      = "storage.vmdkpop.io/claim-uid"
	AnnJobUID        = "storage.vmdkpop.io/job-uid"
	AnnRefreshJobUID = "storage.vmdkpop.io/refresh-job-uid"
)

// AnnResult on an image's PVC records the image's completed attempt (the
// JSON of a CompletionRecord): status is rebuilt from it when status is
// lost, and a finished image never re-runs because its Job is gone.
const AnnResult = "storage.vmdkpop.io/result"

// Populator phases (AnnPhase values).
const (
	PopPending    = "Pending"
	PopPopulating = "Populating"
	PopSucceeded  = "Succeeded"
	PopFailed     = "Failed"
)

// Condition reasons on VMDKImages (imager's result reasons, such as
// ChecksumMismatch, are used as they come).
const (
	ReasonJobRunning        = "JobRunning"
	ReasonJobStarting       = "JobStarting"
	ReasonSucceeded         = "Succeeded"
	ReasonWaitingForBacking = "WaitingForBackingImage"
	ReasonWaitingForSource  = "WaitingForSourceImage"
	ReasonDependencyFailed  = "DependencyFailed"
	ReasonRetriesExhausted  = "RetriesExhausted"
	ReasonNoResult          = "NoResult"
	ReasonParentCIDMatches  = "ParentCIDMatches"
	ReasonParentChanged     = "ParentChanged"
	ReasonChildrenExist     = "ChildrenExist"
	// ReasonPodEvicted: the kubelet evicted the Job's pod (its scratch
	// space or log outgrew its ephemeral-storage limit, or the node ran
	// short) as many times as the Job retries.
	ReasonPodEvicted = "PodEvicted"
	// ReasonForeignObject (also an event reason, on images and PVCs): an
	// object holds the name of a child the controller would create, but
	// is not the one it created.
	ReasonForeignObject = "ForeignObject"
	// ReasonRetryScheduled: an attempt failed in a way a fresh Job may
	// not; the next one starts after the backoff.
	ReasonRetryScheduled = "RetryScheduled"
	// ReasonRetryRequested: the retry annotation started a fresh attempt.
	ReasonRetryRequested = "RetryRequested"
	// ReasonReadingResult: the Job succeeded but its result went with its
	// pod; an imager info Job reads the image back.
	ReasonReadingResult = "ReadingResult"
	// ReasonJobLost: the attempt's Job went before its end was seen and
	// left no image in the PVC.
	ReasonJobLost = "JobLost"
	// ReasonClaimLost: the image's PVC is gone, Lost or being deleted.
	ReasonClaimLost = "ClaimLost"
	// Storage condition reasons: the PVC's binding (ClaimPending, below,
	// while it is not bound) and resize.
	ReasonClaimBound              = "Bound"
	ReasonResized                 = "Resized"
	ReasonResizing                = "Resizing"
	ReasonFileSystemResizePending = "FileSystemResizePending"
	ReasonResizeFailed            = "ResizeFailed"
	ReasonExpansionUnsupported    = "ExpansionUnsupported"
	// ReasonVolumeNotVerified (an event reason on the user's PVC): the
	// prime PVC's volume failed the checks made before it is handed over.
	ReasonVolumeNotVerified = "VolumeNotVerified"
)

// What blocks a wait (controllers/blockers.go): the reason of an
// image's Progressing and Ready conditions and of its event, and the
// prefix of a PVC's AnnMessage, while the image's Job or a population
// makes no progress. Each message says what to do.
const (
	// ReasonUnschedulable: the scheduler cannot place the Job's pod (its
	// message: no node with the resources, a volume node affinity
	// conflict when the volumes it mounts cannot meet on one node).
	ReasonUnschedulable = "Unschedulable"
	// ReasonImagePullFailed: the node cannot pull the imager image.
	ReasonImagePullFailed = "ImagePullFailed"
	// ReasonContainerCreateFailed: the kubelet cannot create the imager
	// container (CreateContainerConfigError, CreateContainerError).
	ReasonContainerCreateFailed = "ContainerCreateFailed"
	// ReasonMountFailed: the pod's volumes cannot be attached, mounted
	// or mapped on its node.
	ReasonMountFailed = "MountFailed"
	// ReasonPodCreateFailed: the Job controller cannot create the pod
	// (refused by admission, other than by a quota).
	ReasonPodCreateFailed = "PodCreateFailed"
	// ReasonClaimPending: a PVC the Job mounts is not bound, for a reason
	// the message names (no storage class, a missing one, provisioning).
	ReasonClaimPending = "ClaimPending"
	// ReasonQuotaExceeded: a ResourceQuota of the namespace refused a
	// PVC, Job or pod the controller needs.
	ReasonQuotaExceeded = "QuotaExceeded"
)

// Event reasons on VMDKImages.
const (
	EventCreateStarted  = "CreateStarted"
	EventImportStarted  = "ImportStarted"
	EventFlattenStarted = "FlattenStarted"
	EventReady          = "Ready"
	EventFailed         = "ImportFailed"
	EventWaiting        = "Waiting"
	EventChainBroken    = "ChainBroken"
	EventDeleteBlocked  = "DeletionBlocked"
	EventRefreshed      = "Refreshed"
	EventRefreshFailed  = "RefreshFailed"
	// EventAttemptFailed: an attempt failed; a retry is scheduled.
	EventAttemptFailed = "AttemptFailed"
	// EventRetrying: a fresh attempt starts (backoff over, or asked).
	EventRetrying = "Retrying"
	// EventRetryIgnored: a retry annotation on an image with no failure.
	EventRetryIgnored = "RetryIgnored"
)

// Event reasons on a user's PVC.
const (
	EventPopulatorWaiting  = "PopulatorWaiting"
	EventPopulatorStarted  = "PopulatorStarted"
	EventPopulatorFailed   = "PopulatorFailed"
	EventPopulatorFinished = "PopulatorFinished"
	EventPVCTooSmall       = "PVCTooSmall"
	// EventPopulatorRestarted: the prime PVC was deleted or replaced
	// mid-way; the population starts over with a new one.
	EventPopulatorRestarted = "PopulatorRestarted"
	// EventPopulatorRetrying: a fresh attempt after a failed one (the
	// controller's retry, or the user's retry annotation).
	EventPopulatorRetrying = "PopulatorRetrying"
)
