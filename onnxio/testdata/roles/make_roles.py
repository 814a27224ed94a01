#!/usr/bin/python3
"""Exports the attention patterns the role tests of onnxio read
(roles_test.go): a BERT-style layer with separate q, k, v Linears, scores
divided by sqrt(d), an additive padding mask from a second input, output
projection, post-LayerNorm residual FFN and a tanh-pooled classifier; and a
GPT-2-style block with a packed c_attn Linear on a 2-D view split in three,
a causal masked_fill, pre-LayerNorm FFN and a log-softmax LM head. Opsets
11, 13 and 17. Random seeded weights; run with Debian's interpreter
(python3-torch 1.13, python3-onnx); it writes next to itself:

    /usr/bin/python3 onnxio/testdata/roles/make_roles.py
"""
import os
import math

import torch
import torch.nn as nn

os.chdir(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)
torch.manual_seed(0)
class Bert(nn.Module):
    def __init__(s, C=16, H=2):
        super().__init__(); s.H=H
        s.q=nn.Linear(C,C); s.k=nn.Linear(C,C); s.v=nn.Linear(C,C); s.o=nn.Linear(C,C)
        s.ln=nn.LayerNorm(C); s.f1=nn.Linear(C,32); s.f2=nn.Linear(32,C); s.ln2=nn.LayerNorm(C); s.cls=nn.Linear(C,3)
    def heads(s,x):
        B,T,C=x.shape; return x.view(B,T,s.H,C//s.H).permute(0,2,1,3)
    def forward(s,x,mask):
        q,k,v=s.heads(s.q(x)),s.heads(s.k(x)),s.heads(s.v(x))
        sc=torch.matmul(q,k.transpose(-1,-2))/math.sqrt(q.shape[-1])
        sc=sc+(1.0-mask[:,None,None,:])*-10000.0
        p=torch.softmax(sc,-1)
        o=torch.matmul(p,v).permute(0,2,1,3).contiguous()
        o=o.view(o.shape[0],o.shape[1],-1)
        x=s.ln(x+s.o(o))
        x=s.ln2(x+s.f2(torch.nn.functional.gelu(s.f1(x))))
        return s.cls(torch.tanh(x[:,0]))
class GPT(nn.Module):
    def __init__(s,C=16,H=2,T=5):
        super().__init__(); s.H=H
        s.attn=nn.Linear(C,3*C); s.proj=nn.Linear(C,C); s.fc=nn.Linear(C,4*C); s.fp=nn.Linear(4*C,C); s.ln=nn.LayerNorm(C); s.ln2=nn.LayerNorm(C); s.head=nn.Linear(C,50,bias=False)
        s.register_buffer("bias", torch.tril(torch.ones(T,T)).view(1,1,T,T))
    def forward(s,x):
        B,T,C=x.shape
        h=s.ln(x)
        qkv=s.attn(h.view(-1,C)).view(B,T,3*C)
        q,k,v=qkv.split(C,dim=2)
        q=q.view(B,T,s.H,C//s.H).transpose(1,2);k=k.view(B,T,s.H,C//s.H).transpose(1,2);v=v.view(B,T,s.H,C//s.H).transpose(1,2)
        a=(q@k.transpose(-2,-1))*(1.0/math.sqrt(k.size(-1)))
        a=a.masked_fill(s.bias[:,:,:T,:T]==0,float('-inf'))
        a=torch.softmax(a,-1)
        y=(a@v).transpose(1,2).contiguous().view(B,T,C)
        x=x+s.proj(y)
        x=x+s.fp(torch.nn.functional.gelu(s.fc(s.ln2(x))))
        return torch.log_softmax(s.head(x),-1)
for op in (11,13,17):
    torch.onnx.export(Bert().eval(),(torch.randn(2,5,16),torch.ones(2,5)),f"bert_{op}.onnx",opset_version=op,input_names=["input","mask"],dynamic_axes={"input":{0:"N"},"mask":{0:"N"}})
    torch.onnx.export(GPT().eval(),(torch.randn(2,5,16),),f"gpt_{op}.onnx",opset_version=op,input_names=["input"],dynamic_axes={"input":{0:"N"}})
