package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vmdkpop/vmdkpop/api/v1alpha1"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// ImagerConfig is how the controller runs imager Jobs.
type ImagerConfig struct {
	// Image is the container image holding /imager.
	Image      string
	PullPolicy corev1.PullPolicy
	// Resources of the imager container.
	Resources corev1.ResourceRequirements
	// BackoffLimit is how many times a Job retries transient failures
	// (exit code 1); permanent ones (exit 2, 3) fail the Job at once.
	BackoffLimit int32
	// TTLSecondsAfterFinished lets Kubernetes delete finished Jobs.
	TTLSecondsAfterFinished int32
	// UID and GID the Job runs as (also the PVC's fsGroup).
	UID, GID int64
	// Retry is how the controllers retry Jobs whose transient failures
	// used up BackoffLimit.
	Retry RetryPolicy
	// MaxScratch caps the scratch space (an emptyDir on the node's disk)
	// an import may spool its source to; 0: only what the image's size
	// calls for.
	MaxScratch int64
}

// DefaultImagerConfig is what the manager uses unless its flags say
// otherwise.
func DefaultImagerConfig() ImagerConfig {
	return ImagerConfig{
		Image:      "vmdkpop:dev",
		PullPolicy: corev1.PullIfNotPresent,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("16Mi")},
			// imager stays under 256 MiB whatever the disk size. With a
			// read-only root filesystem, its only node-disk use besides
			// the scratch emptyDir (added per Job) is its log.
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("600Mi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("64Mi")},
		},
		BackoffLimit:            4,
		TTLSecondsAfterFinished: 3600,
		Retry:                   DefaultRetryPolicy(),
		UID:                     65532,
		GID:                     65532,
	}
}

const (
	imagesDir     = "/images"
	diskFile      = "disk.vmdk"
	sourceDir     = "/source"
	scratchDir    = "/scratch"
	caDir         = "/etc/vmdkpop/ca"
	credsDir      = "/etc/vmdkpop/credentials"
	containerName = "imager"
)

// Operation is what an image's Job does.
type Operation string

const (
	OpCreate  Operation = "create"
	OpImport  Operation = "import"
	OpFlatten Operation = "flatten"
)

// operationOf tells what Job an image needs.
func operationOf(img *v1alpha1.VMDKImage) Operation {
	switch {
	case img.Spec.Source == nil:
		return OpCreate
	case img.Spec.Source.Image != nil:
		return OpFlatten
	}
	return OpImport
}

// phaseOf is the phase while op runs.
func phaseOf(op Operation) v1alpha1.Phase {
	switch op {
	case OpImport:
		return v1alpha1.PhaseImporting
	case OpFlatten:
		return v1alpha1.PhaseFlattening
	}
	return v1alpha1.PhaseCreating
}

// nameFor derives a child object's name from the image's name and UID:
// stable across reconciles (so creation is idempotent), unique per image
// incarnation, and at most 63 characters (a valid label value and DNS label).
func nameFor(img *v1alpha1.VMDKImage, kind string) string {
	return hashedName(img.Name, string(img.UID), kind)
}

// hashedName is base-kind-<8 hex digits of salt's sha256>, base cut so the
// whole fits 63 characters.
func hashedName(base, salt, kind string) string {
	sum := sha256.Sum256([]byte(salt))
	suffix := "-" + kind + "-" + hex.EncodeToString(sum[:])[:8]
	if len(base)+len(suffix) > 63 {
		base = strings.TrimRight(base[:63-len(suffix)], "-.")
	}
	return base + suffix
}

// imagePath is where an image's descriptor is inside the Job's pod.
func imagePath(name string) string { return path.Join(imagesDir, name, diskFile) }

// jobFor builds the Job that writes img into its PVC. mounts are the
// other images the Job reads (the backing chain, or the chain being
// flattened), each mounted read-only beside img under /images.
func jobFor(img *v1alpha1.VMDKImage, claim string, mounts []*v1alpha1.VMDKImage, cfg ImagerConfig) *batchv1.Job {
	op := operationOf(img)
	volumes := []corev1.Volume{pvcVolume("image", claim, false)}
	vmounts := []corev1.VolumeMount{{Name: "image", MountPath: path.Join(imagesDir, img.Name)}}
	cv, cm := chainVolumes(mounts)
	volumes, vmounts = append(volumes, cv...), append(vmounts, cm...)
	args, scratch := imagerArgs(img, &volumes, &vmounts, cfg)
	labels := map[string]string{v1alpha1.LabelImage: img.Name}
	spec := imagerPod{args: args, volumes: volumes, mounts: vmounts, uid: cfg.UID, gid: cfg.GID, scratch: scratch}
	job := imagerJob(hashedName(img.Name, attemptSalt(img), string(op)), img.Namespace, labels, spec, cfg)
	job.Annotations = map[string]string{annAttempt: strconv.Itoa(int(img.Status.Attempt))}
	return job
}

// imagerPod is what differs between the Jobs that run imager.
type imagerPod struct {
	args     []string
	volumes  []corev1.Volume
	mounts   []corev1.VolumeMount
	devices  []corev1.VolumeDevice
	uid, gid int64
	node     string // pin to this node (WaitForFirstConsumer volumes)
	scratch  int64  // bytes of the scratch emptyDir, if there is one
}

// imagerJob builds a hardened Job running imager: non-root, read-only
// root filesystem, no capabilities, no service-account token, results in
// the termination message, and no retries of permanent failures.
func imagerJob(name, namespace string, labels map[string]string, p imagerPod, cfg ImagerConfig) *batchv1.Job {
	labels = managedLabels(labels) // on the pods too: what the cache watches
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To(cfg.BackoffLimit),
			TTLSecondsAfterFinished: ptr.To(cfg.TTLSecondsAfterFinished),
			// Bad input fails the same way every time: do not retry it.
			// Evictions and other disruptions count against
			// backoffLimit: a pod evicted for exceeding its scratch space
			// would be evicted again, and ignoring disruptions would
			// recreate it forever.
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
				{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
					ContainerName: ptr.To(containerName), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn,
					Values: []int32{jobapi.ExitUsage, jobapi.ExitPermanent},
				}},
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To(p.uid),
						RunAsGroup:     ptr.To(p.gid),
						FSGroup:        ptr.To(p.gid),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:                     containerName,
						Image:                    cfg.Image,
						ImagePullPolicy:          cfg.PullPolicy,
						Command:                  []string{"/imager"},
						Args:                     p.args,
						Resources:                resourcesWithScratch(cfg.Resources, p.scratch),
						VolumeMounts:             p.mounts,
						VolumeDevices:            p.devices,
						TerminationMessagePath:   jobapi.ResultPath,
						TerminationMessagePolicy: corev1.TerminationMessageReadFile,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Volumes: p.volumes,
				},
			},
		},
	}
	if p.node != "" {
		job.Spec.Template.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{p.node}}},
			}}},
		}}
	}
	return job
}

// resourcesWithScratch adds the scratch emptyDir's size to the
// container's ephemeral-storage limit, which the kubelet enforces on the
// pod as a whole (emptyDirs included).
func resourcesWithScratch(base corev1.ResourceRequirements, scratch int64) corev1.ResourceRequirements {
	r := *base.DeepCopy()
	if scratch <= 0 {
		return r
	}
	if r.Limits == nil {
		r.Limits = corev1.ResourceList{}
	}
	limit := r.Limits[corev1.ResourceEphemeralStorage]
	limit.Add(*resource.NewQuantity(scratch, resource.BinarySI))
	r.Limits[corev1.ResourceEphemeralStorage] = limit
	return r
}

// scratchSize is the scratch space an HTTP import of img may spool to: a
// spooled source is a VMDK (or the disk of an OVA) of the image's
// virtual size at most, plus its metadata; capped by cfg.MaxScratch.
func scratchSize(img *v1alpha1.VMDKImage, cfg ImagerConfig) int64 {
	var size int64
	switch {
	case img.Spec.Size != nil:
		size = img.Spec.Size.Value()
	case img.Spec.Storage.Size != nil:
		size = img.Spec.Storage.Size.Value()
	}
	const mib = 1 << 20
	need := (size + size/64 + 64*mib + mib - 1) / mib * mib
	if cfg.MaxScratch > 0 && need > cfg.MaxScratch {
		need = cfg.MaxScratch
	}
	return need
}

// chainVolumes mounts images read-only at /images/<name>: where their
// descriptors' relative parent paths expect one another.
func chainVolumes(imgs []*v1alpha1.VMDKImage) ([]corev1.Volume, []corev1.VolumeMount) {
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	for i, m := range imgs {
		name := "chain-" + strconv.Itoa(i)
		volumes = append(volumes, pvcVolume(name, m.Status.ClaimName, true))
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: path.Join(imagesDir, m.Name), ReadOnly: true})
	}
	return volumes, mounts
}

func pvcVolume(name, claim string, readOnly bool) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: readOnly},
	}}
}

// imagerArgs is the imager command line for img, adding the volumes its
// source needs, and the size of the scratch space it gets.
func imagerArgs(img *v1alpha1.VMDKImage, volumes *[]corev1.Volume, mounts *[]corev1.VolumeMount, cfg ImagerConfig) ([]string, int64) {
	spec := img.Spec
	out := imagePath(img.Name)
	opts := jobapi.VMDKOptions{Subformat: string(spec.Subformat), AdapterType: spec.AdapterType}
	if spec.Subformat == "" {
		opts.Subformat = string(v1alpha1.MonolithicSparse)
	}
	if spec.HWVersion != nil {
		opts.HWVersion = int(*spec.HWVersion)
	}
	switch operationOf(img) {
	case OpCreate:
		c := jobapi.CreateArgs{Quiet: true, ResultFile: jobapi.ResultPath, Root: imagesDir, Options: opts, Image: out, Size: spec.Size.Value()}
		if spec.BackingImage != nil {
			c.Backing = imagePath(spec.BackingImage.Name)
		}
		return c.Argv(), 0
	case OpFlatten:
		return jobapi.ConvertArgs{TargetFormat: "vmdk", Options: opts, ResultFile: jobapi.ResultPath, Root: imagesDir,
			Source: imagePath(spec.Source.Image.Name), Target: out}.Argv(), 0
	}
	args := jobapi.ImportArgs{ResultFile: jobapi.ResultPath, Target: path.Dir(out), TargetFormat: "vmdk", Options: opts}
	if spec.Size != nil {
		args.Size = spec.Size.Value()
	}
	if v := spec.Source.VSphere; v != nil {
		if v.DeltaFrom != "" && spec.BackingImage != nil {
			// The delta's parent, mounted with the backing chain; the
			// child names it relative to its own directory.
			args.Backing, args.Root = imagePath(spec.BackingImage.Name), imagesDir
		}
		return vsphereArgs(args, v, volumes, mounts), 0
	}
	if h := spec.Source.HTTP; h != nil {
		scratch := scratchSize(img, cfg)
		*volumes = append(*volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			SizeLimit: resource.NewQuantity(scratch, resource.BinarySI),
		}}})
		*mounts = append(*mounts, corev1.VolumeMount{Name: "scratch", MountPath: scratchDir})
		args.ScratchDir = scratchDir
		args.CAFile = mountCA(h.CAConfigMap, volumes, mounts)
		args.CredentialsDir = mountCredentials(h.SecretRef, nil, volumes, mounts)
		if args.CredentialsDir != "" {
			args.InsecureAllowCredentialsOverHTTP = h.InsecureAllowCredentialsOverHTTP
		}
		args.Checksum, args.OVADisk, args.Source = h.Checksum, h.OVADisk, h.URL
		return args.Argv(), scratch
	}
	p := spec.Source.PVC
	*volumes = append(*volumes, pvcVolume("source", p.ClaimName, true))
	*mounts = append(*mounts, corev1.VolumeMount{Name: "source", MountPath: sourceDir, ReadOnly: true})
	args.Root, args.Source = sourceDir, path.Join(sourceDir, p.Path)
	return args.Argv(), 0
}

// mountCA mounts the ca.crt key of a ConfigMap (none: "") read-only and
// returns the path to give imager's --ca-file ("" for none).
func mountCA(configMap string, volumes *[]corev1.Volume, mounts *[]corev1.VolumeMount) string {
	if configMap == "" {
		return ""
	}
	*volumes = append(*volumes, corev1.Volume{Name: "ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: configMap},
		Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
	}}})
	*mounts = append(*mounts, corev1.VolumeMount{Name: "ca", MountPath: caDir, ReadOnly: true})
	return path.Join(caDir, "ca.crt")
}

// mountCredentials mounts a Secret (none: "") read-only, only the given
// keys if any (then a Secret without one of them fails the pod's mount,
// before imager runs), and returns the directory to give imager's
// --credentials-dir ("" for none).
func mountCredentials(secret string, keys []string, volumes *[]corev1.Volume, mounts *[]corev1.VolumeMount) string {
	if secret == "" {
		return ""
	}
	src := &corev1.SecretVolumeSource{SecretName: secret}
	for _, k := range keys {
		src.Items = append(src.Items, corev1.KeyToPath{Key: k, Path: k})
	}
	*volumes = append(*volumes, corev1.Volume{Name: "credentials", VolumeSource: corev1.VolumeSource{Secret: src}})
	*mounts = append(*mounts, corev1.VolumeMount{Name: "credentials", MountPath: credsDir, ReadOnly: true})
	return credsDir
}

// pvcFor builds the PVC an image lives in.
func pvcFor(img *v1alpha1.VMDKImage, name string, sourceSize int64) *corev1.PersistentVolumeClaim {
	st := img.Spec.Storage
	modes := st.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	request := st.Size
	if request == nil {
		request = resource.NewQuantity(defaultClaimSize(img, sourceSize), resource.BinarySI)
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: img.Namespace, Labels: managedLabels(map[string]string{v1alpha1.LabelImage: img.Name})},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: st.StorageClassName,
			AccessModes:      modes,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *request}},
		},
	}
}

// defaultClaimSize is what imager's fits-check needs for the image
// (jobapi.RequiredBytes): its whole virtual size (a guest may fill its
// disk), its grain tables, and the filesystem's own share.
func defaultClaimSize(img *v1alpha1.VMDKImage, sourceSize int64) int64 {
	size := sourceSize
	if img.Spec.Size != nil {
		size = max(size, img.Spec.Size.Value())
	}
	return jobapi.RequiredBytes(size, jobapi.Filesystem)
}
