// Command localprovisioner is the local cluster's dynamic provisioner
// (hack/local-cluster.sh runs it on the host): a PVC of its storage class
// gets a local PV on the node, a directory for Filesystem mode or a loop
// device for Block mode. Like CSI's external-provisioner, it leaves PVCs
// with a dataSourceRef alone: those belong to a volume populator. Released
// volumes are deleted. It polls: it is a test fixture, not a product.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const provisionedBy = "pv.kubernetes.io/provisioned-by"

type provisioner struct {
	cs    kubernetes.Interface
	name  string // the StorageClass's provisioner
	class string
	dir   string
	node  string
}

func main() {
	var p provisioner
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig")
	flag.StringVar(&p.name, "provisioner", "vmdkpop.io/local", "provisioner name of the StorageClass")
	flag.StringVar(&p.class, "class", "vmdkpop-local", "StorageClass served")
	flag.StringVar(&p.dir, "dir", "/var/lib/vmdkpop-cluster/volumes", "where volumes live")
	flag.StringVar(&p.node, "node", "", "the node's name")
	flag.Parse()
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	p.cs = kubernetes.NewForConfigOrDie(cfg)
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		log.Fatal(err)
	}
	for {
		if err := p.pass(context.Background()); err != nil {
			log.Print(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (p *provisioner) pass(ctx context.Context) error {
	pvcs, err := p.cs.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range pvcs.Items {
		c := &pvcs.Items[i]
		if c.Spec.StorageClassName == nil || *c.Spec.StorageClassName != p.class || c.Spec.VolumeName != "" ||
			c.Spec.DataSourceRef != nil || !c.DeletionTimestamp.IsZero() || c.Annotations["volume.kubernetes.io/selected-node"] == "" {
			continue
		}
		if err := p.provision(ctx, c); err != nil {
			log.Printf("provision %s/%s: %v", c.Namespace, c.Name, err)
		}
	}
	pvs, err := p.cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range pvs.Items {
		v := &pvs.Items[i]
		if v.Annotations[provisionedBy] == p.name && v.Status.Phase == corev1.VolumeReleased {
			if err := p.remove(ctx, v); err != nil {
				log.Printf("delete %s: %v", v.Name, err)
			}
		}
	}
	return nil
}

func (p *provisioner) provision(ctx context.Context, c *corev1.PersistentVolumeClaim) error {
	name := "pvc-" + string(c.UID)
	if _, err := p.cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{}); err == nil {
		return nil
	}
	size := c.Spec.Resources.Requests[corev1.ResourceStorage]
	block := c.Spec.VolumeMode != nil && *c.Spec.VolumeMode == corev1.PersistentVolumeBlock
	path := filepath.Join(p.dir, name)
	if block {
		f, err := os.Create(path + ".img")
		if err != nil {
			return err
		}
		err = f.Truncate(size.Value())
		f.Close()
		if err != nil {
			return err
		}
		out, err := exec.Command("losetup", "-f", "--show", path+".img").Output()
		if err != nil {
			return fmt.Errorf("losetup: %w", err)
		}
		path = strings.TrimSpace(string(out))
	} else if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	mode := corev1.PersistentVolumeFilesystem
	if block {
		mode = corev1.PersistentVolumeBlock
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{provisionedBy: p.name}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   c.Spec.AccessModes,
			VolumeMode:                    &mode,
			StorageClassName:              p.class,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: c.Namespace, Name: c.Name, UID: c.UID},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{p.node}}},
			}}}},
		},
	}
	if _, err := p.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	log.Printf("provisioned %s (%s, %s) for %s/%s", name, mode, size.String(), c.Namespace, c.Name)
	return nil
}

func (p *provisioner) remove(ctx context.Context, v *corev1.PersistentVolume) error {
	path := v.Spec.Local.Path
	if strings.HasPrefix(path, "/dev/loop") {
		if out, err := exec.Command("losetup", "-d", path).CombinedOutput(); err != nil {
			return fmt.Errorf("losetup -d %s: %v %s", path, err, out)
		}
		os.Remove(filepath.Join(p.dir, v.Name+".img"))
	} else if filepath.Dir(path) == p.dir {
		os.RemoveAll(path)
	}
	err := p.cs.CoreV1().PersistentVolumes().Delete(ctx, v.Name, metav1.DeleteOptions{})
	if err == nil {
		log.Printf("deleted %s", v.Name)
	}
	return client(err)
}

func client(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
