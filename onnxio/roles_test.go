package onnxio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ecprune/ecprune/testmodels"
)

// roleCodes abbreviate roles in the tables below.
var roleCodes = map[string]Role{
	"d": RoleDense, "q": RoleQuery, "k": RoleKey, "v": RoleValue, "qkv": RoleInProj, "o": RoleAttnOut,
	"f1": RoleFFNIn, "f2": RoleFFNOut, "mlp": RoleHidden, "head": RoleHead, "patch": RolePatchEmbed,
	"kv": RoleKeyValue,
}

func wantRoles(t *testing.T, codes string) []Role {
	t.Helper()
	var out []Role
	for _, c := range strings.Fields(codes) {
		r, ok := roleCodes[c]
		if !ok {
			t.Fatalf("bad role code %q", c)
		}
		out = append(out, r)
	}
	return out
}

func checkRoles(t *testing.T, n *Network, codes string) {
	t.Helper()
	want := wantRoles(t, codes)
	var got []string
	for _, l := range n.Layers {
		got = append(got, l.Role.String())
	}
	if len(got) != len(want) {
		t.Fatalf("%d layers %q, want %d roles", len(got), got, len(want))
	}
	for i, l := range n.Layers {
		if l.Role != want[i] {
			t.Errorf("layer %d (%s, %dx%d): role %q, want %q (all: %q)", i, l.Name, l.Out, l.In, l.Role, want[i], got)
		}
	}
}

// Attention blocks and FFNs repeat per encoder layer.
const (
	encoderRoles = "qkv o f1 f2 "
	mixerRoles   = "f1 f2 f1 f2 "
	decoderRoles = "qkv o q kv o f1 f2 "
)

// TestRolesZoo: the roles of every layer of the PyTorch exports of the
// zoo (testdata/zoo/zoo.json gives each model's family), read from the
// graph alone.
func TestRolesZoo(t *testing.T) {
	cases := map[string]string{
		// mlp and old: dense-activation-dense chains, then the head.
		"mlp_relu_op13":      "mlp mlp head",
		"mlp_relu_op9":       "mlp mlp head",
		"mlp_batchnorm_op13": "mlp mlp head",
		"mlp_tanh_deep_op11": "mlp mlp mlp mlp mlp mlp mlp head",
		"mlp_tanh_deep_op13": "mlp mlp mlp mlp mlp mlp mlp head",
		// cnn: the classifier after the convolutions (Conv is no dense layer).
		"lenet5_op9":              "mlp mlp head",
		"lenet5_op11":             "mlp mlp head",
		"lenet5_op13":             "mlp mlp head",
		"lenet5_op17":             "mlp mlp head",
		"vgg_tiny_op13":           "mlp head",
		"alexnet_tiny_op13":       "mlp mlp head",
		"mobilenet_v3_small_op13": "mlp head",
		"mobilenet_v3_small_op17": "mlp head",
		"resnet_tiny_op11":        "head",
		"resnet_tiny_op13":        "head",
		"cnn_pads_op11":           "mlp head",
		"cnn_pads_op13":           "mlp head",
		// transformer: a Linear embedding of the input features, then per
		// layer MultiheadAttention's packed in_proj sliced in three, its
		// out_proj, the FFN; a head on the mean over tokens.
		"transformer_post_op11": "d " + encoderRoles + encoderRoles + "head",
		"transformer_post_op13": "d " + encoderRoles + encoderRoles + "head",
		"transformer_post_op17": "d " + encoderRoles + encoderRoles + "head",
		"transformer_pre_op11":  "d " + encoderRoles + encoderRoles + "head",
		"transformer_pre_op13":  "d " + encoderRoles + encoderRoles + "head",
		// decoder: self-attention (packed), then cross-attention whose
		// in_proj is read as two row blocks, q and the packed k/v.
		"decoder_op13": "d d " + decoderRoles + decoderRoles + "head",
		"decoder_op17": "d d " + decoderRoles + decoderRoles + "head",
		// a bare cross-attention without constant folding: in_proj read
		// as three row blocks.
		"xattn_op17":           "d d d q k v o head",
		"transformer_pre_op17": "d " + encoderRoles + encoderRoles + "head",
		// vit: timm's qkv Linear (Gather of q, k, v), proj, MLP, head; the
		// Linear patch embedding reads reshaped image patches.
		"vit_conv_op13":   encoderRoles + encoderRoles + "head",
		"vit_conv_op17":   encoderRoles + encoderRoles + "head",
		"vit_linear_op11": "patch " + encoderRoles + encoderRoles + "head",
		"vit_linear_op13": "patch " + encoderRoles + encoderRoles + "head",
		"vit_linear_op17": "patch " + encoderRoles + encoderRoles + "head",
		// swin: windowed attention blocks; PatchMerging's reduction is a
		// plain dense layer between LayerNorms.
		"swin_tiny_op13": encoderRoles + encoderRoles + "d " + encoderRoles + "head",
		// resmlp: the cross-patch Linear has no activation (a plain dense),
		// the cross-channel MLP is an FFN.
		"resmlp_op13": "patch d f1 f2 d f1 f2 head",
		"resmlp_op17": "patch d f1 f2 d f1 f2 head",
		// mixer: token- and channel-mixing MLPs are both residual FFNs.
		"mixer_op13": mixerRoles + mixerRoles + "head",
		"mixer_op17": mixerRoles + mixerRoles + "head",
		// rnn: a Linear head on the last hidden state.
		"lstm_op11": "head",
		"lstm_op13": "head",
		"gru_op13":  "head",
		// einsum: packed qkv einsum attention.
		"einsum_dense_op12":     "head",
		"einsum_dense_op13":     "head",
		"einsum_attention_op12": "qkv o head",
		"einsum_attention_op13": "qkv o head",
		// tied: the tied embedding/unembedding is the head.
		"tied_lm_last_op13": "mlp head",
		"tied_lm_seq_op13":  "mlp head",
		"mlp_shared_op13":   "mlp mlp mlp head",
	}
	dir := filepath.Join("..", "testdata", "zoo")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".onnx")
		if !ok {
			continue
		}
		seen++
		codes, ok := cases[name]
		if !ok {
			t.Errorf("zoo model %s has no expected roles", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			m, err := Load(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			n, err := Extract(m, ExtractOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkRoles(t, n, codes)
		})
	}
	if seen != len(cases) {
		t.Errorf("%d zoo models, %d expected", seen, len(cases))
	}
}

// TestRolesBuilders: roles on the exporter patterns of testmodels,
// including separate q, k, v projections and the cases that must stay
// plain dense layers.
func TestRolesBuilders(t *testing.T) {
	for _, c := range []struct{ name, codes string }{
		{"gemm_relu_opset13", "mlp mlp head"},
		{"two_heads_opset13", "mlp mlp head head"},
		{"residual_opset13", "mlp d head"},
		{"softmax_opset13", "mlp mlp head"},
		{"attention_vit_opset13", "qkv o head"},
		{"split_qkv_opset11", "mlp qkv o"},
		{"split_qkv_opset13", "mlp qkv o"},
		{"split_qkv_opset18", "mlp qkv o"},
		// Separate projections: q and k by their side of the scores
		// product, v by the product with the attention weights.
		{"einsum_attention_opset13", "q k v o"},
		// LayerNorm between two layers: no FFN pattern.
		{"layernorm_gelu_mlp_opset17", "d d head"},
		{"token_slice_opset13", "mlp head head"},
		{"cls_token_opset13", "d head"},
		{"view_keep2_opset13", "patch head"},
		// A prediction read off by ArgMax or Round is still the head; a
		// router whose ArgMax only indexes another layer's output is not.
		{"argmax_only_opset13", "mlp head"},
		{"round_side_output_opset13", "mlp head head"},
		{"argmax_router_opset13", "mlp d head"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tc, ok := testmodels.ByName(c.name)
			if !ok {
				t.Fatalf("no test model %s", c.name)
			}
			b, err := proto.Marshal(tc.Model)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Parse(b, c.name)
			if err != nil {
				t.Fatal(err)
			}
			n, err := Extract(m, ExtractOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkRoles(t, n, c.codes)
		})
	}
}

// TestRolesExports: roles on PyTorch exports outside the zoo
// (testdata/roles/make_roles.py): separate q, k, v projections with an
// additive mask from a second input, and GPT-2's packed projection on a
// 2-D view split in three under a causal mask.
func TestRolesExports(t *testing.T) {
	for _, c := range []struct{ file, codes string }{
		{"bert_11.onnx", "q k v o f1 f2 head"},
		{"bert_13.onnx", "q k v o f1 f2 head"},
		{"bert_17.onnx", "q k v o f1 f2 head"},
		{"gpt_11.onnx", "qkv o f1 f2 head"},
		{"gpt_13.onnx", "qkv o f1 f2 head"},
		{"gpt_17.onnx", "qkv o f1 f2 head"},
	} {
		t.Run(c.file, func(t *testing.T) {
			m, err := Load(filepath.Join("testdata", "roles", c.file))
			if err != nil {
				t.Fatal(err)
			}
			n, err := Extract(m, ExtractOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkRoles(t, n, c.codes)
		})
	}
}
